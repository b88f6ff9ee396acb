"""What a MessageCache read returns: the value, where it came from, and how fresh it is."""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["CacheAnswer", "DialogEntry", "Source"]

T = TypeVar("T")


class Source(str, enum.Enum):
    """Where a read was answered from."""

    CACHE = "cache"
    TELEGRAM = "telegram"


@attrs.frozen
class CacheAnswer(Generic[T]):
    """One read's answer.

    - ``value``: the messages (newest first), the message (or None), or the dialogs.
    - ``source``: `Source.CACHE` or `Source.TELEGRAM`.
    - ``stale``: True when the client was not CONNECTED: the cache cannot prove it
      current; ``as_of`` then says when it last was (``time.time()``; 0.0: never).
      A current answer has ``stale`` False and ``as_of`` now.
    - ``complete``: the cache could prove the answer whole (always True from Telegram).
      A stale answer outside a span is what the cache holds, possibly less.
    """

    value: T
    source: Source
    stale: bool
    as_of: float
    complete: bool = True

    @property
    def from_cache(self) -> bool:
        return self.source is Source.CACHE


@attrs.frozen
class DialogEntry:
    """One dialog: the chat (marked peer id), its entity and its top message (Telethon
    objects, None when not known), newest first in `MessageCache.dialogs`."""

    chat_id: int
    top_id: int
    top_date: int
    pinned: bool = False
    entity: Any = attrs.field(default=None, repr=False)
    message: Any = attrs.field(default=None, repr=False)
