"""Leaving a client: stop taking updates, let the handlers finish, disconnect, flush the
session, release the lease and close the store, all bounded by shutdown_timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import anyio

from . import _compat, _exported
from ._kinds import describe
from ._state import ConnectionState, StateReason

if TYPE_CHECKING:
    from ._core import ClientCore, Telegram

__all__ = ["shut_down"]

log = logging.getLogger("resilient_tg.client")


async def shut_down(client: ClientCore) -> None:
    """Stop the tasks, disconnect, flush the session, release the lease — bounded."""
    client._closing = True
    started = time.monotonic()
    # AUTH_LOST and REJECTED write nothing: the store is left as it was.
    auth_lost = client._state in (ConnectionState.AUTH_LOST, ConnectionState.REJECTED)
    with anyio.move_on_after(client.shutdown_timeout) as scope:
        if client._link.post_connect is not None:
            client._link.post_connect.cancel()
        if client._telegram is not None and client._link.up and not auth_lost:
            await _quiesce(client, client._telegram)
        if client.cache is not None and not auth_lost:
            # What the handlers took, the cache writes too (its cursor then covers it).
            await client.cache._quiesce(min(2.0, client.shutdown_timeout / 2))
        if client._telegram is not None:
            if auth_lost and client._session is not None:
                client._session.discard_changes()
            elif client._session is not None and not _compat.handlers_idle(client._telegram):
                # Disconnecting cancels the handlers still running: keep the update state
                # at the last point every handler had finished, so that the next start
                # delivers their updates again (at-least-once) instead of skipping them.
                log.info("shutdown: handlers still running; their updates will be delivered again")
                client._session.hold_update_state()
            log.debug("shutdown: disconnecting")
            _exported.stop(client)  # borrows opening links to other DCs end now
            try:
                await client._telegram.disconnect()
                await _exported.close(client)
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                log.warning("disconnect failed during shutdown: %s", describe(exc))
            _compat.end_queued(client._telegram)  # their callers hear it now, not at a deadline
        log.debug("shutdown: flushing the session")
        if client._session is not None and not auth_lost:
            try:
                await client._session.aclose()
            except Exception as exc:  # noqa: BLE001 - reported, the lease is still released
                log.error(  # noqa: TRY400 - one line; the cause is in the message
                    "shutting down: %s", client._save_problem(exc)
                )
        elif client._session is not None:
            # What Telethon's disconnect() put in the session since is not written either.
            client._session.discard_changes()
            await client._session.aclose()
        log.debug("shutdown: releasing the lease")
        await client._leases.release()
        if not client._state.terminal:
            client._transition(ConnectionState.CLOSED, StateReason.USER, "client closed")
        with anyio.move_on_after(1.0):
            await client._callbacks.drain()
    if scope.cancelled_caught:
        log.error("shutdown did not finish within shutdown_timeout=%.1fs", client.shutdown_timeout)
        if not client._state.terminal:
            client._transition(ConnectionState.CLOSED, StateReason.USER, "shutdown timed out")
    client._keepalive.stop()
    client._upkeep.stop()
    client._callbacks.close()
    client._leases.close()
    # Our tasks end before the store closes: the lease and flush loops use it.
    await client._tasks.aclose()
    if client.cache is not None:
        with anyio.move_on_after(client.shutdown_timeout):
            await client.cache._close()
    client._deadlines.close()
    try:
        await client._store.aclose()
    except Exception as exc:  # noqa: BLE001
        log.warning("closing the store failed: %s", describe(exc))
    log.debug("shut down in %.2fs", time.monotonic() - started)


async def _quiesce(client: ClientCore, telegram: Telegram) -> None:
    """Stop taking updates, then let the handlers finish the ones already taken, so that
    the update state saved on the way out covers exactly what was handled."""
    client._abort_link(StateReason.USER, "shutting down", quiet=True)  # no reconnect follows
    limit = time.monotonic() + min(2.0, client.shutdown_timeout / 2)
    quiet = 0
    while time.monotonic() < limit and quiet < 2:
        quiet = quiet + 1 if _compat.handlers_idle(telegram) else 0
        await asyncio.sleep(0.02)
