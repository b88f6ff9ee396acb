"""Flag: the contract of ``asyncio.Event`` at a fraction of its memory.

An ``asyncio.Event`` allocates a deque for its waiters up front (~860 bytes); a client
holds about ten of them and a service may hold hundreds of clients. A Flag keeps its
waiters in a list that exists only while somebody waits (~100 bytes at rest).
"""

from __future__ import annotations

import asyncio

__all__ = ["Flag"]


class Flag:
    """Set, clear and wait, as ``asyncio.Event``: ``set()`` wakes every current waiter,
    even if the flag is cleared again before they run."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        waiting = len(self._waiters) if self._waiters else 0
        return f"<Flag {'set' if self._set else 'unset'}, {waiting} waiting>"

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        """Return at once if set, else when ``set()`` is next called."""
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters = self._waiters
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    self._waiters = None
