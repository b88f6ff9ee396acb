"""Keeping a cache bounded: last N per chat, a total, an idle TTL, and a retention age."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import attrs

from ._backend import CacheBackend

if TYPE_CHECKING:
    from ._writer import UpdateWriter

__all__ = ["TRIM_AFTER", "Bounds", "enforce", "trim_written"]

TRIM_AFTER = 200  # messages written before the chats they went to are trimmed

log = logging.getLogger("resilient_tg.cache")


@attrs.frozen
class Bounds:
    """``per_chat`` live messages per chat, ``max_messages`` per account, chats unread for
    ``idle_ttl`` seconds dropped, messages older than ``retention`` seconds dropped."""

    per_chat: int
    max_messages: int
    idle_ttl: float | None = None
    retention: float | None = None


async def enforce(backend: CacheBackend, account: str, bounds: Bounds, *, started_at: float) -> int:
    """Apply every bound to the account's chats now; return how many messages went."""
    now = time.time()
    gone = 0
    usage = [u for u in await backend.usage() if u.account == account]
    kept = []
    for chat in usage:
        # A chat never read counts as read when this cache started (not as idle forever).
        if bounds.idle_ttl is not None and max(chat.last_read, started_at) < now - bounds.idle_ttl:
            await backend.drop_chat(account, chat.chat_id)
            gone += chat.messages
            continue
        count = chat.messages
        if count > bounds.per_chat:
            gone += await backend.trim(account, chat.chat_id, bounds.per_chat)
            count = bounds.per_chat
        if bounds.retention is not None and count:
            cutoff = now - bounds.retention
            held = await backend.history(account, chat.chat_id, below=None, limit=count)
            young = sum(1 for m in held if m.date >= cutoff)
            if young < len(held):
                gone += await backend.trim(account, chat.chat_id, young)
                count = young
        kept.append((chat.last_read, chat.chat_id, count))
    total = sum(c for _, _, c in kept)
    for _, chat_id, count in sorted(kept):  # least recently read first
        if total <= bounds.max_messages:
            break
        await backend.drop_chat(account, chat_id)
        total -= count
        gone += count
    if gone:
        log.debug("cache bounds: %d message(s) of account %s dropped", gone, account)
    return gone


async def trim_written(
    backend: CacheBackend, account: str, writer: UpdateWriter, bounds: Bounds
) -> None:
    """Keep the chats that got many messages (``writer.written``: chat -> count) at
    ``per_chat``, between the full `enforce` runs (cheaper than one)."""
    if sum(writer.written.values()) < TRIM_AFTER:
        return
    for chat_id in [c for c, n in writer.written.items() if n]:
        await backend.trim(account, chat_id, bounds.per_chat)
    writer.written.clear()
