"""resilient_tg.cache: recent messages per account and chat, kept gap-free by updates.

``MessageCache(client, backend)`` attaches a cache to a `ResilientClient` (as
``client.cache``); its reads (`MessageCache.history`, `MessageCache.get`,
`MessageCache.dialogs`) answer from the cache when a span proves the range complete and
from Telegram otherwise, saying which in a `CacheAnswer`.

Backends: `MemoryCacheBackend`; `SQLCacheBackend` (the ``sql`` extra) and
`RedisCacheBackend` (the ``redis`` extra), imported on first use so that importing this
package needs neither; subclass `CacheBackend` to keep the cache elsewhere, and check it
with `resilient_tg.testing.cache_contract`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import CacheCorruptError, StaleCacheError
from ._answer import CacheAnswer, DialogEntry, Source
from ._backend import (
    CacheBackend,
    CachedDialog,
    CachedMessage,
    ChatUsage,
    Cursor,
    HistoryRead,
    ReadMarks,
    Span,
    SpanState,
)
from ._cache import MessageCache
from ._memory import MemoryCacheBackend

if TYPE_CHECKING:
    from ._redis import RedisCacheBackend
    from ._sql import SQLCacheBackend

__all__ = [
    "CacheAnswer",
    "CacheBackend",
    "CacheCorruptError",
    "CachedDialog",
    "CachedMessage",
    "ChatUsage",
    "Cursor",
    "DialogEntry",
    "HistoryRead",
    "MemoryCacheBackend",
    "MessageCache",
    "ReadMarks",
    "RedisCacheBackend",
    "SQLCacheBackend",
    "Source",
    "Span",
    "SpanState",
    "StaleCacheError",
]


def __getattr__(name: str) -> Any:
    # RedisCacheBackend and SQLCacheBackend import on first use, so that their extras
    # (redis; sql) are needed only by those who use them.
    if name == "RedisCacheBackend":
        from ._redis import RedisCacheBackend

        return RedisCacheBackend
    if name == "SQLCacheBackend":
        from ._sql import SQLCacheBackend

        return SQLCacheBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
