"""Fleet callbacks: what happened to which account, delivered in order, never fatal.

Kinds: ``claimed`` (this worker took the account and its client is entered),
``connected`` (its link is CONNECTED, every time), ``disconnected`` (a live link was
lost), ``released`` (this worker gave it up on purpose: a rebalance, a drain, a status
change, its removal) and ``lost`` (it was taken from this worker: the lease was lost,
or the server stopped accepting the auth key or the app).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._state import StateChange

__all__ = ["KINDS", "FleetCallbacks", "FleetEvent"]

log = logging.getLogger("resilient_tg.fleet")

KINDS = ("claimed", "connected", "disconnected", "released", "lost")
C = TypeVar("C", bound=Callable[..., Any])


@attrs.frozen
class FleetEvent:
    """One thing that happened to one account of this worker."""

    kind: str
    account: str
    worker_id: str
    detail: str = ""
    change: StateChange | None = None


class FleetCallbacks:
    """Callbacks by kind; one dispatcher task (owned by the fleet) calls them in order."""

    def __init__(self, limit: int = 100_000) -> None:
        self._callbacks: dict[str, list[Callable[[FleetEvent], Any]]] = {k: [] for k in KINDS}
        self._limit = limit
        # Made by dispatch() (a fleet never entered holds no stream to close).
        self._send: MemoryObjectSendStream[FleetEvent] | None = None

    def add(self, kind: str, callback: C) -> C:
        if not callable(callback):
            raise TypeError(f"on_{kind}() needs a callable, got {type(callback).__name__}")
        self._callbacks[kind].append(callback)
        return callback

    def emit(self, event: FleetEvent) -> None:
        """Queue ``event`` (dropped with a warning if the queue is full or closed)."""
        if not self._callbacks[event.kind] or self._send is None:
            return
        try:
            self._send.send_nowait(event)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.warning(
                "fleet callback queue full or closed; %s of %s dropped", event.kind, event.account
            )

    def close(self) -> None:
        """No more events; the dispatcher ends once the queued ones are delivered."""
        if self._send is not None:
            self._send.close()

    async def dispatch(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Deliver queued events until closed (run as the fleet's task)."""
        self._send, receive = anyio.create_memory_object_stream[FleetEvent](self._limit)
        task_status.started()
        async with receive:
            async for event in receive:
                for callback in self._callbacks[event.kind]:
                    try:
                        result = callback(event)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("fleet %s callback %r failed; ignored", event.kind, callback)
