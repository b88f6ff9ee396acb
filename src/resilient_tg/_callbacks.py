"""Connection callbacks: registered per event, called in order, never fatal.

Callbacks may be plain functions or coroutine functions; they get the event: a
StateChange, or a Gap for ``on_gap``.
One dispatcher task calls them one at a time in the order the transitions happened,
so a slow callback delays later callbacks. An exception is logged and swallowed. The
dispatcher exists only while callbacks are queued: a client with no callbacks, or
none pending, pays no task for them.

A plain function runs in the event loop: while it runs, nothing else does, the client
included. One that takes `BLOCKING_WARNING` seconds or more is named in a WARNING
with how long it blocked (the keepalive does not count such a stall against the link,
see _keepalive.py); slow work belongs in a coroutine or a thread.
"""

from __future__ import annotations

import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ._flag import Flag
from ._gap import Gap
from ._state import StateChange

__all__ = ["BLOCKING_WARNING", "Callback", "CallbackRegistry", "GapCallback"]

log = logging.getLogger("resilient_tg.client")

Callback = Callable[[StateChange], Any]
GapCallback = Callable[[Gap], Any]
C = TypeVar("C", bound=Callable[..., Any])
# Starts the dispatcher as a task of the owner; returns None once the owner is closing.
Spawner = Callable[[Callable[[], Awaitable[None]]], object]

#: Seconds a plain-function callback may hold the event loop before it is warned about.
BLOCKING_WARNING = 0.25

EVENTS = (
    "connected",
    "disconnected",
    "reconnecting",
    "state_change",
    "auth_lost",
    "rejected",
    "gap",
)


class CallbackRegistry:
    """Callbacks by event, and the queue their dispatcher drains.

    Holds no I/O resource: a client built and never entered leaves nothing to close.
    """

    def __init__(self, limit: int = 10_000) -> None:
        # Both made on first use: most clients register few callbacks, some none.
        self._callbacks: dict[str, list[Callable[[Any], Any]]] = {}
        self._queue: collections.deque[tuple[str, StateChange | Gap]] | None = None
        self._limit = limit
        self._idle = Flag()
        self._idle.set()
        self._spawn: Spawner | None = None
        self._running = False
        self._closed = False

    def attach(self, spawn: Spawner) -> None:
        """Let the registry start its dispatcher through ``spawn`` from now on."""
        self._spawn = spawn
        self._kick()

    def add(self, event: str, callback: C) -> C:
        if not callable(callback):
            raise TypeError(f"on_{event}() needs a callable, got {type(callback).__name__}")
        if event not in EVENTS:
            raise ValueError(f"unknown callback event {event!r}")
        self._callbacks.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, change: StateChange | Gap) -> None:
        """Queue the callbacks of ``event`` (never blocks, never raises)."""
        if not self._callbacks.get(event):
            return
        if self._queue is None:
            self._queue = collections.deque()
        if self._closed or len(self._queue) >= self._limit:
            log.warning("dropped %s callbacks: the callback queue is full or closed", event)
            return
        self._queue.append((event, change))
        self._idle.clear()
        self._kick()

    async def drain(self) -> None:
        """Wait until every queued callback has run."""
        await self._idle.wait()

    def _kick(self) -> None:
        if self._running or not self._queue or self._spawn is None:
            return
        self._running = True
        if self._spawn(self._run) is None:
            self._running = False
            self.close()

    async def _run(self) -> None:
        """The dispatcher: calls the queued callbacks in order, then ends."""
        queue = self._queue
        assert queue is not None
        try:
            while queue:
                event, change = queue.popleft()
                for callback in list(self._callbacks[event]):
                    await call_safely(callback, change, event)
        finally:
            # Empty, or cancelled because the owner is closing: nobody should wait on.
            self._running = False
            self._idle.set()

    def close(self) -> None:
        self._closed = True
        if self._queue is not None:
            self._queue.clear()
        self._idle.set()


async def call_safely(
    callback: Callable[[Any], Any], change: StateChange | Gap, event: str
) -> None:
    try:
        started = time.monotonic()
        try:
            result = callback(change)
        finally:
            blocked = time.monotonic() - started
            if blocked >= BLOCKING_WARNING:
                log.warning(
                    "on_%s callback %s blocked the event loop for %.1fs; the client could not "
                    "run meanwhile (make it async, or move slow work to a thread)",
                    event,
                    _name(callback),
                    blocked,
                )
        if inspect.isawaitable(result):
            await _await(result)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception:
        log.exception("on_%s callback %s raised; the client carries on", event, _name(callback))


def _name(callback: Callable[[Any], Any]) -> str:
    return str(getattr(callback, "__qualname__", None) or repr(callback))


async def _await(result: Awaitable[Any]) -> None:
    await result
