"""UpdateQueue: the updates Telethon's message box applied, waiting to be written.

The box feeds it (in the order it applies updates); the cache's writer task takes what
is queued as one batch and marks it written. Reads settle on its counters: they wait
until what was queued before them is written, which a steady stream of updates (a queue
that is never empty) cannot starve.
"""

from __future__ import annotations

import collections
from typing import Any

import anyio

from .._flag import Flag

__all__ = ["FeedEntry", "UpdateQueue"]

#: One update as the box applied it: (update, users, chats, pts).
FeedEntry = tuple[Any, Any, Any, int]


class UpdateQueue:
    """A FIFO of fed updates with ``idle`` (nothing left to write), ``wake`` (something
    was fed) and the counts of updates fed and written."""

    def __init__(self) -> None:
        self._entries: collections.deque[FeedEntry] = collections.deque()
        self.wake = Flag()
        self.idle = Flag()
        self.idle.set()
        self.fed = self.written = 0
        self._progress = Flag()  # set after each batch is written
        self._generation = 0  # bumped by `drop`: a batch taken before it is void

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: FeedEntry) -> None:
        self._entries.append(entry)
        self.fed += 1
        self.idle.clear()
        self.wake.set()

    def take(self) -> tuple[list[FeedEntry], int]:
        """Everything queued, as one batch, with the generation it belongs to."""
        return list(self._entries), self._generation

    def done(self, batch: list[FeedEntry], generation: int) -> bool:
        """Mark ``batch`` (taken by `take`) written; False if `drop` voided it."""
        if generation != self._generation:
            return False
        for _ in batch:
            self._entries.popleft()
        self.written += len(batch)
        self._progress.set()
        return True

    def drop(self) -> None:
        """Forget what is queued (a purge: it belongs to the purged past)."""
        self._generation += 1
        self._entries.clear()
        self.written = self.fed

    async def settle(self, limit: float) -> bool:
        """Wait (at most ``limit`` seconds) until what was fed so far is written."""
        target = self.fed
        with anyio.move_on_after(limit):
            while self.written < target:
                self._progress.clear()
                await self._progress.wait()
        return self.written >= target
