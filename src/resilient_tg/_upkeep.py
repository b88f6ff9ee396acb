"""The client's upkeep: lease renewal and update-state flushing (scheduler entries), and
what the client does when the lease keeper reports the lease waiting or lost.

Two processes must never use one key: on a loss the link is dropped at once, then the
lease is taken again, the session reloaded (another holder may have written it) and the
supervisor connects anew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from . import _compat
from ._errors import LeaseLostError
from ._kinds import describe
from ._scheduler import Timer, get_scheduler
from ._state import ConnectionState, StateReason

if TYPE_CHECKING:
    from ._core import ClientCore

__all__ = ["EXPORTED_EVERY", "Upkeep", "on_lease_lost", "on_lease_waiting"]

#: How often idle senders to other DCs are looked for (what Telethon's own ping loop,
#: which the client stops, did every 60 s).
EXPORTED_EVERY = 60.0

log = logging.getLogger("resilient_tg.client")


def on_lease_waiting(client: ClientCore, holder: str) -> None:
    """Another live holder has the lease: WAITING_LEASE, naming it."""
    if client._state is not ConnectionState.WAITING_LEASE:
        client._transition(
            ConnectionState.WAITING_LEASE,
            StateReason.LEASE,
            f"session leased to {holder}",
            message=f"waiting for the session lease held by {holder}",
        )


def on_lease_lost(client: ClientCore, why: str) -> None:
    """Two processes must never use one key: drop the link now (called by the lease
    keeper, from its expiry timer too), then wait for the lease in the background."""
    if client._closing:
        return
    if client._session is not None:
        client._session.discard_changes()
    client._transition(
        ConnectionState.WAITING_LEASE,
        StateReason.LEASE,
        f"lease lost: {why}",
        message=f"lease lost ({why}); dropping the link and waiting for it",
    )
    # The recovery's first step closes the socket, within a loop iteration. (Not an
    # abort here: that starts Telethon's own reconnect, and cancelling it early leaves
    # its sender unable to send after the next connect.)
    client._spawn("lease-recovery", _recover_lease, client)


async def _recover_lease(client: ClientCore) -> None:
    """After a loss: close the link, take the lease again, reload the session, resume."""
    if client._telegram is not None:
        try:
            await client._telegram.disconnect()
        except Exception as exc:  # noqa: BLE001 - the link is closed either way
            log.warning("disconnect after the lease loss failed: %s", describe(exc))
    leases = client._leases
    while not client._closing:
        await leases.acquire(retry_failures=True, announce=False)
        try:
            with anyio.fail_after(client.lease_ttl / 3):
                data = await client._store.load()
        except Exception as exc:  # noqa: BLE001 - store outage: retry, we hold the lease
            log.warning("could not reload the session after taking the lease: %s", describe(exc))
            await asyncio.sleep(min(1.0, client.lease_ttl / 6))
            continue
        if leases.lease is None:
            continue  # lost again while reloading
        if client._session is not None:
            client._session.reload(data)
            client._session.hold_update_state()  # the stored state is the newest until caught up
            client._health.was_authorized = client._session.ever_authorized
        client._link.first_attempt = True
        leases.resume()  # the supervisor connects again
        return


class Upkeep:
    """Renew the lease every lease_ttl/3, flush the update state every flush_interval,
    and close idle senders to other DCs every `EXPORTED_EVERY` seconds: entries in the
    process's scheduler. A round with nothing to do (an idle client's flush) runs no
    task; one that must wait for the store runs a short task of the client's. (The lease
    keeper's own timer drops the link if renewals hang.)"""

    __slots__ = ("_client", "_timers")

    def __init__(self, client: ClientCore) -> None:
        self._client = client
        self._timers: list[Timer] = []

    def start(self) -> None:
        client = self._client
        scheduler = get_scheduler()
        self._timers = [
            scheduler.call_later(client.lease_ttl / 3, self._renew_due),
            scheduler.call_later(client.flush_interval, self._flush_due),
            scheduler.call_later(EXPORTED_EVERY, self._exported_due),
        ]

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def _again(self, index: int, delay: float, fn: Callable[[], None]) -> None:
        if self._timers and not self._client._closing:
            self._timers[index] = get_scheduler().call_later(delay, fn)

    def _renew_due(self) -> None:
        client = self._client
        if client._spawn("lease-renewal", self._renew) is None:
            return

    async def _renew(self) -> None:
        client = self._client
        started = time.monotonic()
        try:
            await client._leases.renew()
        finally:
            every = client.lease_ttl / 3
            self._again(0, max(0.0, started + every - time.monotonic()), self._renew_due)

    def _flush_due(self) -> None:
        client = self._client
        if _flush_needed(client) and client._spawn("flush", self._flush) is not None:
            return
        self._again(1, client.flush_interval, self._flush_due)

    async def _flush(self) -> None:
        try:
            await _flush_update_state(self._client)
        finally:
            self._again(1, self._client.flush_interval, self._flush_due)

    def _exported_due(self) -> None:
        telegram = self._client._telegram
        if (
            telegram is not None
            and _compat.has_exported(telegram)
            and self._client._spawn("exported-cleanup", self._clean_exported) is not None
        ):
            return
        self._again(2, EXPORTED_EVERY, self._exported_due)

    async def _clean_exported(self) -> None:
        try:
            telegram = self._client._telegram
            if telegram is not None:
                await _compat.clean_exported(telegram)
        finally:
            self._again(2, EXPORTED_EVERY, self._exported_due)


def _flush_needed(client: ClientCore) -> bool:
    """Whether a flush has something to write; brings the session's copy of the update
    state up to date first (without a task where the session allows it)."""
    telegram, session = client._telegram, client._session
    if (
        telegram is None
        or session is None
        or client._state not in (ConnectionState.CONNECTED, ConnectionState.CATCHING_UP)
        or not client._health.authorized
    ):
        return False
    if not _compat.handlers_idle(telegram):
        return session.dirty  # the update state waits until no handler runs (see below)
    if not _compat.save_states_now(telegram):
        return True  # could not be done without awaiting: a task does it
    return session.dirty


async def _flush_update_state(client: ClientCore) -> None:
    """Keep the stored update state at most ~flush_interval behind what was handled."""
    telegram, session = client._telegram, client._session
    if (
        telegram is None
        or session is None
        or client._state not in (ConnectionState.CONNECTED, ConnectionState.CATCHING_UP)
        or not client._health.authorized
    ):
        return
    # The update state is taken only while no update waits for or runs in a handler: a
    # stored pts then never covers an update whose handler has not finished, so a crash
    # replays it (at-least-once) instead of losing it.
    if _compat.handlers_idle(telegram):
        await _compat.save_states(telegram)
    if not session.dirty:
        return
    # Bounded, so that a hanging store cannot hold up the lease renewal behind it; the
    # session stays dirty and the next round (or the background writer) tries again.
    lost: LeaseLostError | None = None
    with anyio.move_on_after(client.lease_ttl / 6):
        try:
            await session.flush()
        except LeaseLostError as exc:
            lost = exc
        except Exception as exc:  # noqa: BLE001 - visible in health, retried next time
            log.debug("periodic session flush failed: %s", describe(exc))
    if lost is not None:
        client._leases.drop(describe(lost))
