"""The client's upkeep: lease renewal and update-state flushing (one task for both), and
what the client does when the lease keeper reports the lease waiting or lost.

Two processes must never use one key: on a loss the link is dropped at once, then the
lease is taken again, the session reloaded (another holder may have written it) and the
supervisor connects anew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import anyio

from . import _compat
from ._errors import LeaseLostError
from ._kinds import describe
from ._state import ConnectionState, StateReason

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["housekeeping", "on_lease_lost", "on_lease_waiting"]

log = logging.getLogger("resilient_tg.client")


def on_lease_waiting(client: ResilientClient, holder: str) -> None:
    """Another live holder has the lease: WAITING_LEASE, naming it."""
    if client._state is not ConnectionState.WAITING_LEASE:
        client._transition(
            ConnectionState.WAITING_LEASE,
            StateReason.LEASE,
            f"session leased to {holder}",
            message=f"waiting for the session lease held by {holder}",
        )


def on_lease_lost(client: ResilientClient, why: str) -> None:
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


async def _recover_lease(client: ResilientClient) -> None:
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
            client._was_authorized = client._session.ever_authorized
        client._link.first_attempt = True
        leases.resume()  # the supervisor connects again
        return


async def housekeeping(client: ResilientClient) -> None:
    """Renew the lease every lease_ttl/3 and flush the update state every
    flush_interval: one task for both, as each client's tasks count in a fleet. (The
    lease keeper's own timer drops the link if renewals hang.)"""
    renew_every = client.lease_ttl / 3
    next_renew = time.monotonic() + renew_every
    next_flush = time.monotonic() + client.flush_interval
    while not client._closing:
        await asyncio.sleep(max(0.0, min(next_renew, next_flush) - time.monotonic()))
        now = time.monotonic()
        if now >= next_renew:
            next_renew = now + renew_every
            await client._leases.renew()
        if now >= next_flush and not client._closing:
            await _flush_update_state(client)
            next_flush = time.monotonic() + client.flush_interval


async def _flush_update_state(client: ResilientClient) -> None:
    """Keep the stored update state at most ~flush_interval behind what was handled."""
    telegram, session = client._telegram, client._session
    if (
        telegram is None
        or session is None
        or client._state not in (ConnectionState.CONNECTED, ConnectionState.CATCHING_UP)
        or not client._authorized
    ):
        return
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
