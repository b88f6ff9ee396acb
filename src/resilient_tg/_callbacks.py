"""Connection callbacks: registered per event, called in order, never fatal.

Callbacks may be plain functions or coroutine functions; they get the StateChange.
One dispatcher task calls them one at a time in the order the transitions happened,
so a slow callback delays later callbacks, never the client. An exception is
logged and swallowed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._state import StateChange

__all__ = ["Callback", "CallbackRegistry"]

log = logging.getLogger("resilient_tg.client")

Callback = Callable[[StateChange], Any]
C = TypeVar("C", bound=Callback)

EVENTS = ("connected", "disconnected", "reconnecting", "state_change", "auth_lost")


class CallbackRegistry:
    """Callbacks by event, and the queue their dispatcher drains."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        send, receive = anyio.create_memory_object_stream[tuple[str, StateChange]](10_000)
        self._send: MemoryObjectSendStream[tuple[str, StateChange]] = send
        self._receive: MemoryObjectReceiveStream[tuple[str, StateChange]] = receive
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, event: str, callback: C) -> C:
        if not callable(callback):
            raise TypeError(f"on_{event}() needs a callable, got {type(callback).__name__}")
        self._callbacks[event].append(callback)
        return callback

    def emit(self, event: str, change: StateChange) -> None:
        """Queue the callbacks of ``event`` (never blocks, never raises)."""
        if not self._callbacks[event]:
            return
        try:
            self._send.send_nowait((event, change))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.warning("dropped %s callbacks: the callback queue is full or closed", event)
            return
        self._pending += 1
        if self._idle.is_set():
            self._idle = asyncio.Event()

    async def drain(self) -> None:
        """Wait until every queued callback has run."""
        await self._idle.wait()

    async def run(self) -> None:
        """The dispatcher task: calls callbacks in order until cancelled."""
        async with self._receive:
            async for event, change in self._receive:
                for callback in list(self._callbacks[event]):
                    await call_safely(callback, change, event)
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def close(self) -> None:
        self._send.close()
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
