"""Connection callbacks: registered per event, called in order, never fatal.

Callbacks may be plain functions or coroutine functions; they get the StateChange.
One dispatcher task calls them one at a time in the order the transitions happened,
so a slow callback delays later callbacks, never the client. An exception is
logged and swallowed.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ._state import StateChange

__all__ = ["Callback", "CallbackRegistry"]

log = logging.getLogger("resilient_tg.client")

Callback = Callable[[StateChange], Any]
C = TypeVar("C", bound=Callback)

EVENTS = ("connected", "disconnected", "reconnecting", "state_change", "auth_lost")


class CallbackRegistry:
    """Callbacks by event, and the queue their dispatcher drains.

    Holds no I/O resource: a client built and never entered leaves nothing to close.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._callbacks: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        self._queue: collections.deque[tuple[str, StateChange]] = collections.deque()
        self._limit = limit
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def add(self, event: str, callback: C) -> C:
        if not callable(callback):
            raise TypeError(f"on_{event}() needs a callable, got {type(callback).__name__}")
        self._callbacks[event].append(callback)
        return callback

    def emit(self, event: str, change: StateChange) -> None:
        """Queue the callbacks of ``event`` (never blocks, never raises)."""
        if not self._callbacks[event]:
            return
        if self._closed or len(self._queue) >= self._limit:
            log.warning("dropped %s callbacks: the callback queue is full or closed", event)
            return
        self._queue.append((event, change))
        self._idle.clear()
        self._wakeup.set()

    async def drain(self) -> None:
        """Wait until every queued callback has run."""
        await self._idle.wait()

    async def run(self) -> None:
        """The dispatcher task: calls callbacks in order until cancelled."""
        while True:
            while self._queue:
                event, change = self._queue.popleft()
                for callback in list(self._callbacks[event]):
                    await call_safely(callback, change, event)
            self._idle.set()
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._idle.set()


async def call_safely(callback: Callback, change: StateChange, event: str) -> None:
    try:
        result = callback(change)
        if inspect.isawaitable(result):
            await _await(result)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception:
        name = getattr(callback, "__qualname__", repr(callback))
        log.exception("on_%s callback %s raised; the client carries on", event, name)


async def _await(result: Awaitable[Any]) -> None:
    await result
