"""The claim rounds of one worker, and the life of each account it runs.

A round: write the heartbeat; read the fleet (live workers, every account with its
status and lease); stop what this worker must no longer run (removed, no longer active,
leased to someone else); then claim free accounts up to the fair share, or hand some
over (see `._plan`). An account is claimed by taking its lease under the worker's id;
its ResilientClient, entered with the same holder, then keeps the lease.

An account's task enters its client and waits until it is stopped: on purpose
(``released``: rebalance, drain, status change, removal) or because it was taken
(``lost``: the lease keeper lost the lease, the server refused the key or the app).
AUTH_LOST and REJECTED park the account with that status, so no worker claims it again
until an operator sets it active.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio

from .._client import ResilientClient
from .._errors import FleetError
from .._state import ConnectionState, StateChange
from ..stores._encryption import Encryptor
from ..stores._sql import sealing_key
from ._accounts import AccountStatus, open_settings, proxy_for_telethon
from ._admin import REMOVED_HOLDER
from ._core import FleetCore
from ._db import FleetView
from ._plan import plan_round

__all__ = ["Account", "Rounds"]

log = logging.getLogger("resilient_tg.fleet")


class Account:
    """One account this worker runs (or is starting, or stopping)."""

    __slots__ = (
        "client",
        "done",
        "entered",
        "handover",
        "lost",
        "name",
        "removed",
        "scope",
        "stop_event",
        "why",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.client: ResilientClient | None = None
        self.entered = False
        self.stop_event = anyio.Event()
        self.done = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.why = ""
        self.lost = False
        self.handover = False
        self.removed = False  # stopped because its row was deleted: purge its cache

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self, why: str, *, lost: bool = False) -> None:
        """Ask the account's task to leave its client (idempotent: the first reason wins)."""
        if self.stop_event.is_set():
            return
        self.why, self.lost = why, lost
        self.stop_event.set()
        if not self.entered and self.scope is not None:
            self.scope.cancel()  # still entering (e.g. waiting for a lease): give up


class _Entered:
    """Leaves an already entered client (its ``__aenter__`` ran under the semaphore)."""

    def __init__(self, client: ResilientClient) -> None:
        self._client = client

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)


class Rounds:
    """The claim loop and the accounts of one `Fleet`."""

    def __init__(self, fleet: FleetCore) -> None:
        self.fleet = fleet
        self.accounts: dict[str, Account] = {}
        self.draining = False
        self.refused: str | None = None
        self.last_error: str | None = None
        self.last_round_at: float | None = None
        self.live_workers = 0
        self.target = 0
        self.total = 0
        self.completed = 0
        self._soon = False
        self._entering = anyio.Semaphore(fleet.start_concurrency)
        self._rng = random.Random()
        self._started_at = time.time()
        self._wake = anyio.Event()
        self._key = sealing_key(fleet.base_store)

    # The loop -------------------------------------------------------------------------

    async def first_round(self) -> None:
        """The heartbeat and a look at the fleet, without claims (they start in `run`)."""
        await self._round(claim=False)

    async def run(self) -> None:
        """A round every claim interval (jittered ±20%) until draining."""
        fleet = self.fleet
        while True:
            delay = fleet.claim_interval * self._rng.uniform(0.8, 1.2)
            if self._soon:
                delay, self._soon = delay / 4, False
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._stopped():
                return
            try:
                # A round never outlives the lease margin: a hung database must not
                # hold the loop past what the lease keepers already bound.
                with anyio.fail_after(max(fleet.claim_interval, fleet.lease_ttl / 3)):
                    await self._round()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("fleet round failed (%s); trying again", self.last_error)

    def _stopped(self) -> bool:
        return self.draining

    async def _round(self, *, claim: bool = True) -> None:
        fleet = self.fleet
        await fleet.db.heartbeat(
            fleet.worker_id,
            host=fleet.host,
            pid=fleet.pid,
            started_at=self._started_at,
            capacity=fleet.capacity,
            running=len(self.accounts),
            draining=self.draining,
        )
        unrenewed = await self._renew()
        view = await fleet.db.view(fleet.lease_ttl)
        self._check_hosts(view)
        self._stop_unwanted(view)  # first: a removed account is released, not lost
        for name in unrenewed:
            if name in self.accounts:
                self.accounts[name].stop("the lease is no longer ours", lost=True)
        me = next((w for w in view.workers if w.worker_id == fleet.worker_id), None)
        active = [a for a in view.accounts if a.status is AccountStatus.ACTIVE]
        self.total = len(active)
        self.live_workers = sum(not w.draining for w in view.workers)
        self.last_round_at = time.monotonic()
        self.last_error = None
        self.completed += 1
        if me is None or not claim or self.draining or self.refused is not None:
            self._soon = True
            return
        free = [a for a in active if not a.holder and a.name not in self.accounts]
        plan = plan_round(
            fleet.worker_id,
            mine=len(self.accounts),
            total=len(active),
            workers=[w.load for w in view.workers],
            free=len(free),
            in_flight=view.in_flight,
            max_moving=fleet.max_moving,
        )
        self.target = plan.target
        if plan.claim:
            # Handed-over accounts first (a move waits on them), the rest in random
            # order so that workers claiming at once rarely meet on one row.
            self._rng.shuffle(free)
            free.sort(key=lambda a: not a.in_handover)
            want = min(plan.claim, fleet.claim_batch)
            await self._claim(
                [a.name for a in free],
                want,
                handovers={a.name for a in free if a.in_handover},
                settings={a.name: a.settings for a in free},
            )
            if plan.claim > want:
                self._soon = True  # more to claim: the next round comes sooner
        elif plan.hand_over:
            await self._hand_over(plan.hand_over)

    async def _renew(self) -> list[str]:
        """Renew every lease of ours in one transaction (the clients' lease keepers then
        renew from this batch without a query of their own, see SQLStore.renew_leases);
        return the accounts whose lease is no longer ours."""
        fleet = self.fleet
        names = [name for name, a in self.accounts.items() if a.entered and not a.stopping]
        if not names:
            return []
        renewed = await fleet.base_store.renew_leases(fleet.worker_id, names, fleet.lease_ttl)
        return [name for name in names if name not in renewed]

    def _check_hosts(self, view: FleetView) -> None:
        fleet = self.fleet
        if fleet.db.database.backend != "sqlite":
            return
        hosts = sorted({w.host for w in view.workers})
        if len(hosts) > 1:
            reason = (
                "SQLite cannot be shared between hosts (file locking over a network "
                f"filesystem is unreliable), but workers run on {', '.join(hosts)}: "
                "use PostgreSQL or MariaDB/MySQL"
            )
            if self.last_round_at is None:
                raise FleetError(f"{fleet.db.display}: {reason}")
            if self.refused is None:
                log.error("%s: %s; this worker stops claiming", fleet.db.display, reason)
            self.refused = reason

    def _stop_unwanted(self, view: FleetView) -> None:
        rows = {a.name: a for a in view.accounts}
        for name, account in list(self.accounts.items()):
            row = rows.get(name)
            if row is None:
                account.removed = True
                account.stop("removed from the fleet")
            elif row.status is not AccountStatus.ACTIVE:
                account.stop(f"status is {row.status.value}: {row.reason}".rstrip(": "))
            elif row.holder and row.holder != self.fleet.worker_id:
                account.stop(f"the lease is held by {row.holder}", lost=True)

    # Claiming and handing over ----------------------------------------------------------

    async def _claim(
        self,
        names: list[str],
        want: int,
        *,
        handovers: set[str],
        settings: dict[str, bytes | None],
    ) -> None:
        fleet = self.fleet
        claimed = await fleet.base_store.claim_leases(
            fleet.worker_id, names, fleet.lease_ttl, limit=want
        )
        if not claimed or self.draining:
            return
        for name in claimed:
            account = Account(name)
            account.handover = name in handovers  # its mark is cleared once CONNECTED here
            self.accounts[name] = account
            fleet.group.start_soon(
                self._run_account, account, fleet.base_store.session(name), settings.get(name)
            )

    async def _hand_over(self, count: int) -> None:
        fleet = self.fleet
        # The most recently claimed ones: the least settled.
        candidates = [
            name
            for name, a in reversed(list(self.accounts.items()))
            if a.entered and not a.stopping
        ][:count]
        if not candidates:
            return
        marked = await fleet.db.mark_handovers(
            fleet.worker_id, candidates, max_moving=fleet.max_moving, worker_ttl=fleet.lease_ttl
        )
        for name in marked:
            log.info("handing %s over to even the fleet out", name)
            self.accounts[name].stop("handed over to even the fleet out")

    # One account ----------------------------------------------------------------------

    async def _run_account(self, account: Account, store: Any, settings: bytes | None) -> None:
        fleet = self.fleet
        name = account.name
        try:
            with anyio.CancelScope() as scope:
                account.scope = scope
                options = self._options(name, settings)
                client = fleet.make_client(store, options)
                account.client = client
                for callback, event in fleet.handlers:
                    self.attach_handler(name, client, callback, event)
                client.on_state_change(lambda change: self._on_change(account, change))
                async with self._entering:  # a batch of claims enters a few at a time
                    await client.__aenter__()
                    account.entered = True
                async with _Entered(client):
                    if account.stopping:
                        return
                    log.info("claimed %s", name)
                    fleet.emit("claimed", name)
                    await account.stop_event.wait()
        except Exception as exc:  # noqa: BLE001 - one account must not take the worker down
            account.why = account.why or f"{type(exc).__name__}: {exc}"
            account.lost = True
            log.warning("account %s stopped: %s", name, account.why)
        finally:
            # The client has left (nothing writes the cache any more): a removed
            # account is reported as released and its cache goes too.
            with anyio.CancelScope(shield=True):
                await self._settle_removal(account)
            if self.accounts.get(name) is account:
                del self.accounts[name]
            account.done.set()
            if account.handover:  # stopped before it got CONNECTED: the move is over too
                account.handover = False
                fleet.group.start_soon(self._arrived, name)
            if account.entered:
                kind = "lost" if account.lost else "released"
                log.info("%s %s: %s", kind, name, account.why)
                fleet.emit(kind, name, account.why)

    async def _settle_removal(self, account: Account) -> None:
        fleet = self.fleet
        if account.lost and not account.removed and REMOVED_HOLDER in account.why:
            # A removal fences the client: its save or lease renewal may be refused
            # (and the account look lost) before a round sees the row gone. Only then is
            # the row looked up: a mass loss (a partition, a pause) makes no queries.
            try:
                with anyio.fail_after(min(2.0, fleet.lease_ttl / 3)):
                    account.removed = not await fleet.db.exists(account.name)
            except Exception as exc:  # noqa: BLE001 - reported as lost, the cache is kept
                log.warning("could not tell whether %s was removed: %s", account.name, exc)
        if account.removed:
            # Whatever stopped it first (a refused save, a round), it was removed.
            account.why, account.lost = "removed from the fleet", False
            if fleet.has_cache:
                await fleet.purge_cache(account.name)

    def _options(self, name: str, blob: bytes | None) -> dict[str, Any]:
        """The account's own settings (as the claim round read them) as client keyword
        arguments."""
        encryptor = (
            None
            if self._key is None
            else Encryptor(self._key, context=f"resilient_tg.Fleet#{name}")
        )
        settings = open_settings(blob, encryptor, source=f"{self.fleet.db.display}#{name}")
        options: dict[str, Any] = {}
        if settings.api_id is not None:
            options.update(api_id=settings.api_id, api_hash=settings.api_hash)
        if settings.proxy is not None:
            options["proxy"] = proxy_for_telethon(settings.proxy)
        return options

    def _on_change(self, account: Account, change: StateChange) -> None:
        fleet = self.fleet
        new = change.new
        if account.done.is_set():
            return  # delivered late, after the account was released or lost: old news
        if new is ConnectionState.CONNECTED and not account.stopping:
            fleet.emit("connected", account.name, change.detail, change)
            if account.handover:
                # The move is over only now: until here it counted against max_moving.
                account.handover = False
                fleet.group.start_soon(self._arrived, account.name)
        elif change.old.link_up and not new.link_up:
            fleet.emit("disconnected", account.name, change.detail, change)
        if not account.entered or account.stopping:
            return
        client = account.client
        if (
            new is ConnectionState.CONNECTED
            and client is not None
            and client.health().authorized is False
        ):
            # A key that was never logged in: no worker can do better with it.
            why = (
                "the session is not logged in; log it in with "
                f"'resilient-tg fleet add {account.name}'"
            )
            fleet.group.start_soon(self._park, account, AccountStatus.PENDING, why, why)
            return
        if new is ConnectionState.WAITING_LEASE:
            account.stop(f"lease lost: {change.detail}", lost=True)
        elif new in (ConnectionState.AUTH_LOST, ConnectionState.REJECTED):
            status = (
                AccountStatus.AUTH_LOST
                if new is ConnectionState.AUTH_LOST
                else AccountStatus.REJECTED
            )
            why = f"{new.value}: {change.detail}"
            fleet.group.start_soon(self._park, account, status, change.detail, why)
        elif new is ConnectionState.GAVE_UP:
            account.stop(f"gave up: {change.detail}", lost=True)

    async def _arrived(self, name: str) -> None:
        try:
            await self.fleet.db.clear_handovers([name])
        except Exception as exc:  # noqa: BLE001 - the mark goes stale by itself
            log.warning("could not clear the handover mark of %s: %s", name, exc)

    async def _park(self, account: Account, status: AccountStatus, reason: str, why: str) -> None:
        """Write the account's status first, then stop it: its lease is released only
        once no worker would claim it again (else another worker could take it in the
        gap and meet the same refusal)."""
        name = account.name
        ttl = self.fleet.lease_ttl
        # Tried again for up to a lease's time (a busy SQLite, a database blip): the rounds
        # keep renewing the lease meanwhile, and an account stopped unparked would bounce
        # to another worker, which meets the same refusal and parks it there.
        give_up_at = anyio.current_time() + ttl
        try:
            while True:
                try:
                    with anyio.fail_after(ttl / 3):
                        await self.fleet.db.set_status(name, status, reason)
                except Exception as exc:  # noqa: BLE001 - logged; another worker sees it too
                    if self.draining or anyio.current_time() + ttl / 3 > give_up_at:
                        log.warning("could not park account %s as %s: %s", name, status.value, exc)
                        return
                    log.info("parking %s as %s failed (%r); trying again", name, status.value, exc)
                    await anyio.sleep(ttl / 12)
                    continue
                log.warning("account %s parked as %s: %s", name, status.value, reason)
                return
        finally:
            account.stop(why, lost=True)

    def attach_handler(
        self, name: str, client: ResilientClient, callback: Callable[..., Any], event: Any
    ) -> None:
        """Register a fleet handler on one account's client, naming the account."""

        async def handler(update: Any) -> Any:
            update.account = name
            return await callback(update)

        # An event builder resolves its chats against one client: each gets its own copy.
        builder = copy.copy(event) if event is not None and not isinstance(event, type) else event
        client.add_event_handler(handler, builder)

    # Draining -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Release every account (see Fleet.drain); idempotent."""
        fleet = self.fleet
        if not self.draining:
            self.draining = True
            self._wake.set()
            try:
                with anyio.fail_after(min(2.0, fleet.drain_timeout / 4)):
                    await fleet.db.heartbeat(
                        fleet.worker_id,
                        host=fleet.host,
                        pid=fleet.pid,
                        started_at=self._started_at,
                        capacity=fleet.capacity,
                        running=len(self.accounts),
                        draining=True,
                    )
            except Exception as exc:  # noqa: BLE001 - others see us stale soon anyway
                log.warning("could not announce the drain: %s", exc)
        with anyio.move_on_after(fleet.drain_timeout):
            limit = anyio.Semaphore(fleet.drain_concurrency)

            async def release(account: Account) -> None:
                async with limit:
                    account.stop("draining")
                    await account.done.wait()

            async with anyio.create_task_group() as group:
                for account in list(self.accounts.values()):
                    group.start_soon(release, account)
        # Out of time: stop what is left all at once (each client bounds its own exit).
        left = list(self.accounts.values())
        for account in left:
            account.stop("draining (out of time)")
        for account in left:
            await account.done.wait()

    async def leave(self) -> None:
        """Remove this worker's heartbeat row (best effort; it goes stale otherwise)."""
        try:
            with anyio.fail_after(2.0):
                await self.fleet.db.remove_worker(self.fleet.worker_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not remove the worker row: %s", exc)
