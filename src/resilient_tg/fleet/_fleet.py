"""Fleet: one worker process's part of a fleet of Telegram accounts in one SQL database.

The worker runs claim rounds every ``claim_interval`` (see `._rounds`): it writes its
heartbeat, reads the fleet, claims free accounts up to its fair share through their
leases, and hands accounts over when another worker has room. Each claimed account
runs as a `ResilientClient` in a task of the fleet, holding the account's lease under
the worker's id: the client's lease keeper renews it and drops the link before it could
expire, so a worker that dies, stops or loses the database loses its accounts to the
survivors only after its links are closed.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

from .._client import ResilientClient
from .._errors import FleetError
from .._policy import KeepalivePolicy, ReconnectPolicy
from .._signals import wait_for_stop_signal
from ..cache import CacheBackend, MessageCache
from ..stores import SQLStore
from ..stores._base import default_holder
from ._db import FleetDatabase, fleet_database
from ._events import FleetCallbacks, FleetEvent
from ._health import FleetHealth
from ._rounds import Rounds

__all__ = ["LEASE_MARGIN", "Fleet", "FleetError"]

log = logging.getLogger("resilient_tg.fleet")

C = TypeVar("C", bound=Callable[..., Any])
H = TypeVar("H", bound=Callable[..., Any])

#: lease_ttl must exceed the keepalive's server-side disconnect delay by this factor (and
#: one second): a worker that stopped renewing still holds the lease for at least 2/3 of
#: ``lease_ttl``, and the server must have closed its links by then, so the next holder
#: never meets an old link of the same key.
LEASE_MARGIN = 1.5


class Fleet:
    """One worker of a fleet: runs its fair share of the accounts in one SQL database.

    ``async with Fleet("postgresql://…", api_id, api_hash, capacity=500) as fleet:``
    writes this worker's heartbeat, then claims and runs accounts in the background;
    ``await fleet.run_until_signal()`` returns on SIGTERM/SIGINT, and leaving the block
    drains: the accounts are released one after another within ``drain_timeout``, so
    the other workers take them at once; what is left then is stopped together, each
    client within its ``shutdown_timeout`` (5 s unless given), so the defaults (20 s + 5 s)
    fit Kubernetes' 30 s grace period.

    ``url`` is a database URL as for `SQLStore` (or an SQLStore, whose pool is shared);
    every session row in it is an account, run while its status is active (see
    `AccountStatus`). ``capacity`` caps this worker's accounts. ``lease_ttl`` bounds how
    long a dead worker's accounts stay dark (they are claimed within ``lease_ttl`` plus
    one ``claim_interval``); it must exceed the keepalive's server-side disconnect
    delay times `LEASE_MARGIN` plus one second. At most ``max_moving`` accounts are
    between workers at once during a rebalance, and one round claims at most
    ``claim_batch`` (the next round then comes after a quarter interval), so workers
    starting together share the accounts instead of the first taking them all. Other
    keyword arguments go to every account's ResilientClient (and from there to
    Telethon).

    Event handlers registered with `on` or `add_event_handler` run for every account;
    the event's ``account`` attribute names the account it came from. Callbacks
    (`on_claimed`, `on_connected`, `on_disconnected`, `on_released`, `on_lost`) get a
    `FleetEvent`.

    ``cache``: a `CacheBackend` shared by the workers (`SQLCacheBackend` or
    `RedisCacheBackend`; `MemoryCacheBackend` only for a one-worker fleet) gives every
    account's client a `MessageCache` keyed by the account's name, so
    ``fleet.client(name).cache`` reads it and the cache moves with the account from
    worker to worker. ``cache_options`` go to each MessageCache (``per_chat``,
    ``retention``, ``key``...). A worker purges an account's cache when it stopped the
    account because it was removed from the fleet; AUTH_LOST purges it too (the cache
    does). The fleet never closes the backend: its owner does, after leaving the fleet.
    """

    def __init__(
        self,
        url: str | SQLStore,
        api_id: int,
        api_hash: str,
        *,
        capacity: int | None = None,
        lease_ttl: float = 30.0,
        claim_interval: float = 5.0,
        max_moving: int = 8,
        claim_batch: int = 100,
        start_concurrency: int = 16,
        drain_timeout: float = 20.0,
        drain_concurrency: int = 4,
        worker_id: str | None = None,
        table_prefix: str | None = None,
        encryption_key: bytes | str | None = None,
        encryption_key_env: str | None = None,
        reconnect: ReconnectPolicy | None = None,
        keepalive: KeepalivePolicy | None = None,
        cache: CacheBackend | None = None,
        cache_options: Mapping[str, Any] | None = None,
        **client_options: Any,
    ) -> None:
        if not isinstance(api_id, int) or isinstance(api_id, bool) or api_id <= 0:
            raise ValueError("api_id must be a positive integer")
        if not isinstance(api_hash, str) or not api_hash:
            raise ValueError("api_hash must be a non-empty string")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be None or an integer >= 0, got {capacity!r}")
        for name, value in (
            ("lease_ttl", lease_ttl),
            ("claim_interval", claim_interval),
            ("drain_timeout", drain_timeout),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(max_moving, int) or max_moving < 1:
            raise ValueError(f"max_moving must be an integer >= 1, got {max_moving!r}")
        if not isinstance(claim_batch, int) or claim_batch < 1:
            raise ValueError(f"claim_batch must be an integer >= 1, got {claim_batch!r}")
        if not isinstance(start_concurrency, int) or start_concurrency < 1:
            raise ValueError(
                f"start_concurrency must be an integer >= 1, got {start_concurrency!r}"
            )
        if not isinstance(drain_concurrency, int) or drain_concurrency < 1:
            raise ValueError(
                f"drain_concurrency must be an integer >= 1, got {drain_concurrency!r}"
            )
        self.keepalive_policy = keepalive or KeepalivePolicy()
        self.reconnect_policy = reconnect or ReconnectPolicy()
        floor = LEASE_MARGIN * self.keepalive_policy.disconnect_delay + 1.0
        if lease_ttl < floor:
            raise ValueError(
                f"lease_ttl={lease_ttl:g}s is too short for the keepalive: the server closes "
                f"a silent link after {self.keepalive_policy.disconnect_delay}s, so lease_ttl "
                f"must be at least {floor:g}s, or another worker could open the key while an "
                "old link of it is still open"
            )
        if claim_interval > lease_ttl / 3:
            raise ValueError(
                f"claim_interval={claim_interval:g}s must be at most lease_ttl/3 "
                f"({lease_ttl / 3:g}s): heartbeats come every claim interval and a worker "
                "whose heartbeat is older than lease_ttl counts as dead"
            )
        for owned in ("holder", "lease_ttl"):
            if owned in client_options:
                raise TypeError(f"Fleet sets {owned!r} for its clients; do not pass it")
        self.cache_backend, self._cache_options = _check_cache(cache, cache_options)
        # Each client's exit is bounded by this; with drain_timeout it fits a 30 s grace.
        client_options.setdefault("shutdown_timeout", 5.0)

        if isinstance(url, SQLStore):
            self._base = url
            self._owns_base = False
        else:
            self._base = SQLStore(
                url,
                name="resilient_tg.fleet",
                table_prefix=table_prefix,
                encryption_key=encryption_key,
                encryption_key_env=encryption_key_env,
                # Every session of this worker shares this pool (SQLStore.session); the
                # batch renewals keep it small: 5 open, 15 at peaks.
                pool_size=5,
                max_overflow=10,
            )
            self._owns_base = True
        self._db: FleetDatabase = fleet_database(self._base)
        self.api_id = api_id
        self._api_hash = api_hash
        self.capacity = capacity
        self.lease_ttl = float(lease_ttl)
        self.claim_interval = float(claim_interval)
        self.max_moving = max_moving
        self.claim_batch = claim_batch
        self.start_concurrency = start_concurrency
        self.drain_timeout = float(drain_timeout)
        self.drain_concurrency = drain_concurrency
        self.worker_id = worker_id or default_holder()
        self.host = socket.gethostname()
        self._client_options = client_options
        self._handlers: list[tuple[Callable[..., Any], Any]] = []
        self._callbacks = FleetCallbacks()
        self._rounds = Rounds(self)
        self._group: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Fleet {self.worker_id} on {self._db.display} ({len(self.accounts)} accounts)>"

    # Public API -----------------------------------------------------------------------

    @property
    def accounts(self) -> dict[str, ResilientClient]:
        """This worker's accounts and their clients (a copy; entered clients only)."""
        return {
            name: account.client
            for name, account in self._rounds.accounts.items()
            if account.client is not None and account.entered
        }

    def client(self, account: str) -> ResilientClient:
        """The client of ``account`` (KeyError if this worker does not run it)."""
        try:
            return self.accounts[account]
        except KeyError:
            raise KeyError(f"this worker does not run account {account!r}") from None

    def on(self, event: Any) -> Callable[[H], H]:
        """Decorator: ``@fleet.on(events.NewMessage)`` registers a Telethon event handler
        for every account, present and future; ``event.account`` names the account."""

        def decorator(callback: H) -> H:
            self.add_event_handler(callback, event)
            return callback

        return decorator

    def add_event_handler(self, callback: Callable[..., Any], event: Any = None) -> None:
        """Register ``callback`` for every account (see `on`)."""
        self._handlers.append((callback, event))
        for name, account in self._rounds.accounts.items():
            if account.client is not None:
                self._rounds.attach_handler(name, account.client, callback, event)

    def on_claimed(self, callback: C) -> C:
        """Call ``callback(FleetEvent)`` when this worker has taken an account."""
        return self._callbacks.add("claimed", callback)

    def on_connected(self, callback: C) -> C:
        """Call ``callback(FleetEvent)`` each time an account's link is CONNECTED."""
        return self._callbacks.add("connected", callback)

    def on_disconnected(self, callback: C) -> C:
        """Call ``callback(FleetEvent)`` when an account's live link is lost."""
        return self._callbacks.add("disconnected", callback)

    def on_released(self, callback: C) -> C:
        """Call ``callback(FleetEvent)`` when this worker gave an account up on purpose."""
        return self._callbacks.add("released", callback)

    def on_lost(self, callback: C) -> C:
        """Call ``callback(FleetEvent)`` when an account was taken from this worker (lease
        lost, auth key or app refused)."""
        return self._callbacks.add("lost", callback)

    def health(self) -> FleetHealth:
        """A snapshot of this worker and its accounts; never does I/O."""
        rounds = self._rounds
        age = None if rounds.last_round_at is None else time.monotonic() - rounds.last_round_at
        healthy = age is not None and age <= 3 * self.claim_interval and rounds.refused is None
        return FleetHealth(
            worker_id=self.worker_id,
            host=self.host,
            draining=rounds.draining,
            healthy=healthy,
            live_workers=rounds.live_workers,
            target=rounds.target,
            total_accounts=rounds.total,
            accounts={
                name: (a.client.state.value if a.client is not None else "starting")
                for name, a in rounds.accounts.items()
            },
            last_round_age=age,
            rounds=rounds.completed,
            last_error=rounds.last_error,
            refused=rounds.refused,
        )

    async def run_until_signal(self) -> int:
        """Return the signal number on SIGTERM or SIGINT; leaving the block then drains."""
        return await wait_for_stop_signal(log, "draining")

    async def drain(self) -> None:
        """Stop claiming and release every account, one after another (at most
        ``drain_concurrency`` at once) within ``drain_timeout``; what is left then is
        stopped all at once. Leaving the block does this too."""
        await self._rounds.drain()

    # Lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Fleet:
        if self._entered:
            raise RuntimeError("a Fleet can be entered once; create a new one")
        self._entered = True
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        try:
            # The first round runs here: a database that cannot be reached, or SQLite
            # seen from another host, is an error of entering, not a silent idle worker.
            await group.start(self._callbacks.dispatch)
            await self._rounds.first_round()
            group.start_soon(self._rounds.run)
        except BaseException:
            self._callbacks.close()
            group.cancel_scope.cancel()
            try:
                await group.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close_base()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group = self._group
        assert group is not None
        with anyio.CancelScope(shield=True):
            try:
                await self._rounds.drain()
            finally:
                self._callbacks.close()
        # The group's scope is exited here, outside any shield (scopes nest strictly).
        group.cancel_scope.cancel()
        try:
            await group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._rounds.leave()
                await self._close_base()

    async def _close_base(self) -> None:
        if self._owns_base:
            try:
                await self._base.aclose()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the exit
                log.warning("could not close the fleet's database pool: %s", exc)

    # For the rounds ---------------------------------------------------------------------

    @property
    def group(self) -> anyio.abc.TaskGroup:
        assert self._group is not None
        return self._group

    @property
    def db(self) -> FleetDatabase:
        return self._db

    @property
    def base_store(self) -> SQLStore:
        return self._base

    @property
    def handlers(self) -> list[tuple[Callable[..., Any], Any]]:
        return self._handlers

    def emit(self, kind: str, account: str, detail: str = "", change: Any = None) -> None:
        self._callbacks.emit(FleetEvent(kind, account, self.worker_id, detail, change))

    def make_client(self, store: SQLStore, options: dict[str, Any]) -> ResilientClient:
        """The ResilientClient of one account (per-account settings in ``options``),
        with its MessageCache when the fleet has a cache (``store.name`` is the account)."""
        kwargs = {**self._client_options, **options}
        api_id = kwargs.pop("api_id", None) or self.api_id
        api_hash = kwargs.pop("api_hash", None) or self._api_hash
        client = ResilientClient(
            store,
            api_id,
            api_hash,
            holder=self.worker_id,
            lease_ttl=self.lease_ttl,
            reconnect=self.reconnect_policy,
            keepalive=self.keepalive_policy,
            **kwargs,
        )
        if self.cache_backend is not None:
            MessageCache(client, self.cache_backend, account=store.name, **self._cache_options)
        return client

    @property
    def has_cache(self) -> bool:
        return self.cache_backend is not None

    async def purge_cache(self, account: str) -> None:
        """Forget ``account``'s cached messages (no-op without a cache); bounded, and
        a failure is logged, never raised: the removal it follows has happened."""
        backend = self.cache_backend
        if backend is None:
            return
        try:
            with anyio.fail_after(max(5.0, self.lease_ttl / 3)):
                await backend.purge(account)
            log.info("purged the cache of the removed account %s", account)
        except Exception as exc:  # noqa: BLE001 - logged: an operator can purge again
            log.warning("could not purge the cache of the removed account %s: %s", account, exc)

    @property
    def pid(self) -> int:
        return os.getpid()


def _check_cache(
    cache: CacheBackend | None, options: Mapping[str, Any] | None
) -> tuple[CacheBackend | None, dict[str, Any]]:
    """Check ``cache`` and ``cache_options`` at construction, not per account later."""
    if cache is not None and not isinstance(cache, CacheBackend):
        raise TypeError(f"cache must be a CacheBackend, got {type(cache).__name__}")
    opts = dict(options or {})
    if opts and cache is None:
        raise ValueError("cache_options without cache: give the fleet a CacheBackend")
    if "account" in opts:
        raise TypeError("Fleet keys each cache by the account's name; do not pass 'account'")
    try:
        inspect.signature(MessageCache).bind(None, cache, **opts)
    except TypeError as exc:
        raise TypeError(f"cache_options: {exc}") from None
    return cache, opts
