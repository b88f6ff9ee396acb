"""Deadlines: ``request_timeout`` for every request of a client with one timer.

A timer per request (``loop.call_later`` then ``cancel``) costs a few microseconds
and leaves a cancelled handle in the event loop's heap each time; with requests of
~0.4 ms on a loopback link that is 1-2% of a round trip (``benchmarks/overhead.py``).
Here a request costs a heap push and a flag; the one timer is re-armed only when the
earliest pending deadline changes or passes, i.e. about once per ``request_timeout``
while requests keep flowing.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

__all__ = ["Deadline", "Deadlines"]

# Rebuild the heap without finished entries when they outnumber live ones by this much.
_COMPACT_AT = 64


class Deadline:
    """One request's deadline; ``fired`` tells whether it cancelled the request's task."""

    __slots__ = ("done", "fired", "task", "when")

    def __init__(self, task: Any, when: float) -> None:
        self.task = task
        self.when = when
        self.done = False
        self.fired = False

    def __lt__(self, other: Deadline) -> bool:  # heap order: the earliest first
        return self.when < other.when


class Deadlines:
    """Cancels the task of every request still running at its deadline (loop time)."""

    __slots__ = ("_armed_at", "_heap", "_live", "_timer")

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        return self._live

    def add(self, task: Any, timeout: float) -> Deadline:
        """Watch ``task`` for ``timeout`` seconds from now; call `finish` when it is done."""
        loop = asyncio.get_running_loop()
        entry = Deadline(task, loop.time() + timeout)
        heapq.heappush(self._heap, entry)
        self._live += 1
        if self._timer is None or entry.when < self._armed_at:
            self._arm(loop, entry.when)
        return entry

    def finish(self, entry: Deadline) -> None:
        if entry.done:
            return
        entry.done = True
        entry.task = None  # nothing keeps a finished request's task alive
        self._live -= 1
        heap = self._heap
        while heap and heap[0].done:
            heapq.heappop(heap)
        if len(heap) > 2 * self._live + _COMPACT_AT:
            self._heap = [item for item in heap if not item.done]
            heapq.heapify(self._heap)

    def close(self) -> None:
        """Stop the timer (the owner is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        # call_at may run a hair early (clock resolution): a millisecond is no difference.
        while heap and (heap[0].done or heap[0].when <= now + 0.001):
            entry = heapq.heappop(heap)
            if entry.done:
                continue
            entry.fired = True
            task, entry.task = entry.task, None
            entry.done = True
            self._live -= 1
            if task is not None:
                task.cancel()
        if heap:
            self._arm(loop, heap[0].when)
