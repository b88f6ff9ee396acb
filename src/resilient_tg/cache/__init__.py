"""resilient_tg.cache: recent messages per account and chat, kept gap-free by updates.

``MessageCache(client, backend)`` attaches a cache to a `ResilientClient` (as
``client.cache``); its reads (`MessageCache.history`, `MessageCache.get`,
`MessageCache.dialogs`) answer from the cache when a span proves the range complete and
from Telegram otherwise, saying which in a `CacheAnswer`. Backends: `MemoryCacheBackend`
here; subclass `CacheBackend` to keep the cache elsewhere.
"""

from .._errors import CacheCorruptError, StaleCacheError
from ._answer import CacheAnswer, DialogEntry, Source
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
from ._cache import MessageCache
from ._memory import MemoryCacheBackend

__all__ = [
    "CacheAnswer",
    "CacheBackend",
    "CacheCorruptError",
    "CachedDialog",
    "CachedMessage",
    "ChatUsage",
    "Cursor",
    "DialogEntry",
    "MemoryCacheBackend",
    "MessageCache",
    "ReadMarks",
    "Source",
    "Span",
    "SpanState",
    "StaleCacheError",
]
