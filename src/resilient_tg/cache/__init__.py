"""resilient_tg.cache: recent messages per account and chat, kept gap-free by updates.

Backends: `MemoryCacheBackend` here; subclass `CacheBackend` to keep the cache elsewhere.
"""

from ._backend import (
    CacheBackend,
    CachedDialog,
    CachedMessage,
    ChatUsage,
    Cursor,
    ReadMarks,
    Span,
    SpanState,
)
from ._memory import MemoryCacheBackend

__all__ = [
    "CacheBackend",
    "CachedDialog",
    "CachedMessage",
    "ChatUsage",
    "Cursor",
    "MemoryCacheBackend",
    "ReadMarks",
    "Span",
    "SpanState",
]
