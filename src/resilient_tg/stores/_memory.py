"""MemoryStore: a session kept in this process only, for tests and throw-away clients."""

from __future__ import annotations

from ._base import SessionStore
from ._data import SessionData

__all__ = ["MemoryStore"]


class MemoryStore(SessionStore):
    """Keeps the session in memory; it is gone when the process ends.

    Its lease is process-local: two clients in this process on one MemoryStore exclude
    each other, nothing else does.
    """

    def __init__(self, data: SessionData | None = None) -> None:
        self._data = data
        self.saves = 0  # how many times save() ran, for tests

    async def load(self) -> SessionData | None:
        return self._data

    async def save(self, data: SessionData) -> None:
        if not isinstance(data, SessionData):
            raise TypeError(f"MemoryStore.save() takes SessionData, got {type(data).__name__}")
        self._data = data
        self.saves += 1

    async def delete(self) -> None:
        self._data = None

    def describe(self) -> str:
        return "memory://"
