"""After a link comes up: probe, catch up, make the session durable, report CONNECTED.

`run_post_connect` runs once per link (a task the supervisor starts in transport_up and
cancels when the link goes down). The probe (updates.getState) proves that the link
carries answers and tells whether the session is authorized; its answer is also the
link's first pong. An authorized session then fetches what it missed (CATCHING_UP), and
the auth key is in the store before the first CONNECTED is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from telethon import errors
from telethon.tl import functions

from . import _compat
from ._connection import not_mtproto_so_far
from ._fatal import app_rejected
from ._kinds import FLOOD, KEY_DEAD, TRANSIENT_RPC, address, dc_of, describe, error_name
from ._state import ConnectionState, StateReason

if TYPE_CHECKING:
    from ._core import ClientCore, LinkView, Telegram

__all__ = ["NOT_LOGGED_IN", "run_post_connect"]

log = logging.getLogger("resilient_tg.client")

NOT_LOGGED_IN = "; not logged in"  # the CONNECTED detail's suffix until a login


class _NoState:
    """Stands in for updates.State when the session is not logged in."""

    pts = 0


#: How many connect_timeouts a connect that keeps hearing from the server may take.
SLOW_CONNECT_LIMIT = 3


async def run_post_connect(link: LinkView, client: ClientCore, conn: Any, generation: int) -> None:
    """Probe, catch up and report CONNECTED on the link of ``generation`` (or abort it)."""
    telegram = client._telegram
    assert telegram is not None
    timeout = client.reconnect_policy.connect_timeout
    started = link.attempt_started or time.monotonic()
    try:
        await _until_ready(link, conn, timeout)
        if generation != client._generation or not client._leases.check():
            return  # (a lease lost meanwhile takes the link down)
        link.carry(True)
        orphans = _compat.dispatch_orphans(telegram)
        if orphans:  # taken by the last link's update loop, never handed to the handlers
            log.info("handing %d update(s) the last link took to the handlers now", orphans)
        state = await _probe(link, client, telegram, timeout)
        if state is None:
            return
        if client._state.terminal:
            return
        if client._health.authorized:
            client._transition(
                ConnectionState.CATCHING_UP,
                StateReason.CONNECTED,
                "link up; fetching missed updates",
                message=f"link up to {address(conn)}; catching up on missed updates",
            )
            await _catch_up(client, telegram, state.pts, generation)
        await _make_durable(client)
    except TimeoutError:
        if generation == client._generation:
            # Bytes that never made a packet: not a slow server, a peer that is not MTProto.
            garbage = not_mtproto_so_far(conn, f"nothing more within {timeout:.1f}s")
            if garbage is not None:
                link.abort(StateReason.TRANSPORT_ERROR, garbage)
            else:
                link.abort(
                    StateReason.CONNECT_TIMEOUT,
                    f"no answer within connect_timeout={timeout:.1f}s",
                )
        return
    except (ConnectionError, OSError, errors.AuthKeyNotFound, errors.InvalidBufferError):
        return  # the link went down again; transport_down or the supervisor took over
    except errors.RPCError as exc:
        # An answer we cannot connect with (CONNECTION_NOT_INITED, a 400...): retry later.
        if generation == client._generation and not client._state.terminal:
            link.abort(StateReason.SERVER_ERROR, f"the server answered {describe(exc)} on connect")
        return
    if generation != client._generation or client._closing:
        return
    if client._health.authorized and client._session is not None:
        client._session.release_update_state()  # probed and caught up: the state is learned
        await _store_first_update_state(client, telegram)
        if generation != client._generation or client._closing:
            return
    link.connected_since = time.monotonic()
    link.outage_started = None
    link.attempt = 0
    link.switch_target = None
    elapsed = time.monotonic() - started
    auth = "" if client._health.authorized else NOT_LOGGED_IN
    client._transition(
        ConnectionState.CONNECTED,
        StateReason.CONNECTED,
        f"connected to {address(conn)}{auth}",
        message=f"connected to {address(conn)} (dc {dc_of(telegram)}) in {elapsed:.2f}s{auth}",
    )


async def _until_ready(link: LinkView, conn: Any, silence: float) -> None:
    """Wait for Telethon's connect() to finish on this link. ``silence`` bounds the
    silence, not the whole exchange: a first connect over a slow link takes several round
    trips (key exchange, a new salt, initConnection, get_me), each of which may take most
    of connect_timeout on a satellite or a loaded proxy. The attempt fails once the peer
    has sent nothing for ``silence`` seconds, or after SLOW_CONNECT_LIMIT x ``silence`` in
    all (a peer trickling packets that never complete a connect). Raises TimeoutError."""
    started = time.monotonic()
    while True:
        now = time.monotonic()
        heard = max(started, getattr(conn, "_rtg_heard_at", 0.0))
        wait = min(heard + silence, started + SLOW_CONNECT_LIMIT * silence) - now
        if wait <= 0:
            raise TimeoutError
        with anyio.move_on_after(wait):
            await link.sender_ready.wait()
            return


async def _probe(link: LinkView, client: ClientCore, telegram: Telegram, limit: float) -> Any:
    """updates.getState: proves the link carries answers and tells if we are authorized."""
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sent = time.monotonic()
        try:
            with anyio.fail_after(remaining):
                state = await _compat.send_raw(telegram, functions.updates.GetStateRequest())
        except FLOOD as exc:
            seconds = max(1, int(exc.seconds))
            client._detail = f"FLOOD_WAIT {seconds}s on reconnect"
            log.info("flood wait of %ds on reconnect; waiting it out", seconds)
            await asyncio.sleep(seconds)
            deadline = time.monotonic() + limit
            continue
        except KEY_DEAD as exc:
            link.auth_lost(error_name(exc), exc)
            return None
        except errors.AuthKeyUnregisteredError as exc:
            if client._health.was_authorized:
                link.auth_lost("AUTH_KEY_UNREGISTERED", exc)
                return None
            client._health.authorized = False
            return _NoState()
        except errors.UnauthorizedError:
            client._health.authorized = False
            return _NoState()
        except TRANSIENT_RPC:
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        except errors.RPCError as exc:
            name = app_rejected(exc)
            if name is None:
                raise
            link.rejected(name, exc)
            return None
        client._health.authorized = True
        client._health.was_authorized = True
        if client._session is not None:
            client._session.mark_authorized()  # durable before CONNECTED (_make_durable)
        client._health.last_request_ok_at = time.time()
        # The answer is the link's first pong: healthy as soon as CONNECTED is reported.
        client._record_pong(time.monotonic() - sent)
        return state


async def _catch_up(
    client: ClientCore, telegram: Telegram, server_pts: int, generation: int
) -> None:
    """Make Telethon fetch the difference until its pts reaches the server's.

    One getDifference always runs, even when the account pts shows no gap: it is what
    names the channels that moved meanwhile (updateChannelTooLong), and the channel
    differences it starts are waited for too, so CONNECTED means caught up everywhere."""
    deadline_span = max(client.reconnect_policy.connect_timeout, 5.0)
    rounds = 0
    while generation == client._generation:
        if _compat.local_pts(telegram) is None:
            return  # no update state yet: nothing to catch up from
        rounds += 1
        before = _compat.differences_ended(telegram)
        await telegram.catch_up()
        deadline = time.monotonic() + deadline_span
        while time.monotonic() < deadline and generation == client._generation:
            if _compat.differences_ended(telegram) > before and not _compat.fetching_difference(
                telegram
            ):
                break
            await asyncio.sleep(0.01)  # Telethon's update loop signals nothing we can await
        local = _compat.local_pts(telegram)
        if local is None or local >= server_pts:
            return
        if rounds >= 5:
            log.warning(
                "catch-up did not reach pts %d after %d rounds; carrying on", server_pts, rounds
            )
            return
        fresh = await _compat.send_raw(telegram, functions.updates.GetStateRequest())
        server_pts = fresh.pts


async def _store_first_update_state(client: ClientCore, telegram: Telegram) -> None:
    """An account that never stored an update state (its first connect) stores one
    before CONNECTED, not at the first periodic flush: a process that dies in between
    would leave the next one no pts to catch up from, and every message sent meanwhile
    would be skipped. Like every update-state write, it waits until no handler runs
    (bounded by connect_timeout; the periodic flush takes over after that)."""
    session = client._session
    if session is None or session.knows_update_state:
        return
    deadline = time.monotonic() + client.reconnect_policy.connect_timeout
    while not _compat.handlers_idle(telegram):
        if time.monotonic() > deadline or client._closing:
            return
        await asyncio.sleep(0.01)  # Telethon's handler tasks signal nothing we can await
    await _compat.save_states(telegram)
    if session.dirty:
        with contextlib.suppress(Exception):  # the periodic flush retries, health shows it
            await session.flush()


async def _make_durable(client: ClientCore) -> None:
    """The auth key must be in the store before the first CONNECTED is reported."""
    session = client._session
    assert session is not None
    delay = 0.2
    warned = ""
    while session.dirty and not client._closing:
        try:
            await session.flush()
        except Exception as exc:  # noqa: BLE001 - any store failure: retry, visible in health
            # Keeps the client from CONNECTED: health's detail says why (and last_error,
            # through the session's save listener); a WARNING whenever the answer changes.
            problem = client._save_problem(exc)
            client._detail = f"{problem}; retrying"
            if problem != warned:
                log.warning("%s; retrying in %.1fs", problem, delay)
                warned = problem
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            return
