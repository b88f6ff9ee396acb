"""The keepalive task: a ping_delay_disconnect every ``interval``; no pong within
``timeout`` means the link is dead, and its socket is aborted so it is rebuilt.

A black-holed (half-open) link therefore costs at most interval + timeout: the ping
that finds it is sent at most ``interval`` after the last pong, and its pong is
awaited for ``timeout``. Each link is watched on its own: its silence counts from the
moment it started carrying requests, never from a pong of an earlier link, and a link
that comes up is pinged at once, whatever the old link's ping is doing.

A stalled event loop is not a silent peer. While a pong is awaited, a timer ticking
every `TICK` seconds measures the loop: a tick that comes more than `STALL` seconds
late means the loop itself did not run (a blocking callback, a long computation), and
the pong may be sitting unread in the socket. The pong's deadline moves by the time
the loop was stalled, so the ping always gets its whole timeout of running loop, and
whatever arrived during the stall is processed first. This protects our side only: the
server closes a link that sent no ping for its ping_delay_disconnect delay
(``KeepalivePolicy.disconnect_delay``, about interval + timeout), so a stall longer
than that may still lose the link on the server's side.

A link that never answered (a connect attempt into a black hole, whose TCP connect a
middlebox accepted) is reported as an attempt that got no answer, not as a lost link.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from telethon.tl import functions

from . import _compat
from ._state import StateReason

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["STALL", "TICK", "run_keepalive"]

log = logging.getLogger("resilient_tg.keepalive")

#: Seconds a timer may fire late before it counts as an event-loop stall.
STALL = 0.25
#: How often the loop is measured while a pong is awaited (only then).
TICK = 0.1


async def run_keepalive(client: ResilientClient) -> None:
    # Pings that outlived their timeout are left to finish (or to be cancelled by a full
    # disconnect): cancelling one would make Telethon 1.45 fail on its late pong
    # (_handle_pong sets a result on a cancelled future and reconnects).
    lingering: set[asyncio.Task[object]] = set()
    try:
        await _ping_forever(client, lingering)
    finally:
        for task in lingering:
            task.cancel()
        if lingering:
            # Owned to the end: wait for the cancelled pings so none outlives the client.
            with anyio.CancelScope(shield=True):
                await asyncio.wait(set(lingering), timeout=1.0)


async def _ping_forever(client: ResilientClient, lingering: set[asyncio.Task[object]]) -> None:
    carrying = client._carrying
    while True:
        if not carrying.is_set():
            await carrying.wait()
        generation = client._generation
        await _watch_link(client, generation, lingering)
        # Declared dead (or gone): wait until that link is down before watching the next.
        while client._generation == generation and carrying.is_set():
            await client._state_changed.wait()


async def _watch_link(
    client: ResilientClient, generation: int, lingering: set[asyncio.Task[object]]
) -> None:
    """Ping one link (``generation``) until it changes or is declared dead."""
    policy = client.keepalive_policy
    telegram = client._telegram
    assert telegram is not None
    up_since = time.monotonic()  # the link carries from now: its silence counts from here
    last_pong: float | None = None
    while client._generation == generation:
        sent = time.monotonic()
        ping = functions.PingDelayDisconnectRequest(
            ping_id=secrets.randbits(63), disconnect_delay=policy.disconnect_delay
        )
        task: asyncio.Task[object] = asyncio.ensure_future(_compat.send_raw(telegram, ping))
        answered = await _await_pong(client, task, generation, policy.timeout)
        if not task.done():
            _compat.withdraw(telegram, ping)  # never resent; its task ends (cancelled) now
            lingering.add(task)
            task.add_done_callback(_forget(lingering))
        if client._generation != generation:
            return  # the link went down under the ping; the next one is watched afresh
        if not answered:
            if client._carrying.is_set():
                _declare_dead(client, up_since, last_pong)
            return
        if task.cancelled() or task.exception() is not None:
            # The link changed under the ping (or the server refused it); start over.
            log.debug("keepalive ping failed: %r", None if task.cancelled() else task.exception())
            await asyncio.sleep(min(policy.interval, 0.1))
            continue
        now = time.monotonic()
        last_pong = now
        client._record_pong(now - sent)
        await asyncio.sleep(max(0.0, sent + policy.interval - now))


async def _await_pong(
    client: ResilientClient, task: asyncio.Task[object], generation: int, limit: float
) -> bool:
    """Wait for the ping's end within ``limit`` seconds of running loop: True if it
    ended (answered or failed), False if not. Returns early when the link changes."""
    loop = asyncio.get_running_loop()
    meter = _StallMeter(loop)
    deadline = loop.time() + limit
    try:
        while True:
            # Wakes on every transition: a link going down ends the wait at once.
            change = asyncio.ensure_future(client._state_changed.wait())
            try:
                await asyncio.wait(
                    {task, change},
                    timeout=max(0.0, deadline + meter.stalled - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                change.cancel()
            if task.done():
                return True
            if client._generation != generation:
                return False
            if loop.time() >= deadline + meter.stalled:
                return False
            if meter.stalled and meter.reported < meter.stalled:
                log.info(
                    "event loop stalled for %.1fs while a keepalive ping was out; "
                    "its timeout is extended by that much",
                    meter.stalled - meter.reported,
                )
                meter.reported = meter.stalled
    finally:
        meter.close()


class _StallMeter:
    """Sums the event-loop stalls (ticks late by more than STALL) while it runs."""

    __slots__ = ("_handle", "_last", "_loop", "reported", "stalled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last = loop.time()
        self.stalled = 0.0
        self.reported = 0.0
        self._handle = loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        late = now - self._last - TICK
        if late > STALL:
            self.stalled += late
        self._last = now
        self._handle = self._loop.call_later(TICK, self._tick)

    def close(self) -> None:
        self._handle.cancel()


def _declare_dead(client: ResilientClient, up_since: float, last_pong: float | None) -> None:
    """Abort the link, saying what was silent: a link that answered before, or an
    attempt that never got an answer (the numbers cover this link only)."""
    now = time.monotonic()
    if last_pong is not None or client.state.link_up:
        silence = now - (last_pong if last_pong is not None else up_since)
        client._abort_link(StateReason.KEEPALIVE_TIMEOUT, f"keepalive timeout after {silence:.1f}s")
    else:
        client._abort_link(StateReason.CONNECT_TIMEOUT, f"no answer within {now - up_since:.1f}s")


def _forget(tasks: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure of a stale ping is not news

    return done
