"""The cache's Cursor: the update state it has written everything up to, and what a start
behind the session means for the spans."""

from __future__ import annotations

import logging
from typing import Any

from .. import _compat
from ._backend import CacheBackend, Cursor, is_channel
from ._codec import timestamp

__all__ = [
    "box_cursor",
    "end_restart_breaks",
    "loaded_state",
    "marked_channel",
    "restart_breaks",
]

log = logging.getLogger("resilient_tg.cache")


def marked_channel(channel_id: int) -> int:
    """Telethon's marked peer id of a bare channel id."""
    return -1_000_000_000_000 - channel_id


def box_cursor(telegram: Any, current_at: float) -> Cursor | None:
    """The message box's applied state as a Cursor (channels by marked id), or None."""
    state = _compat.box_state(telegram)
    if state is None:
        return None
    common, channels = state
    return Cursor(
        pts=int(common["pts"]),
        qts=int(common["qts"]),
        date=timestamp(common["date"]),
        seq=int(common["seq"]),
        channels={marked_channel(c): p for c, p in channels.items()},
        current_at=current_at,
    )


def loaded_state(session: Any) -> tuple[int, dict[int, int]] | None:
    """The update state the session was loaded with (account pts, marked channel -> pts)."""
    common = session.get_update_state(0)
    if common is None:
        return None
    channels = {
        marked_channel(int(entity_id)): int(state.pts)
        for entity_id, state in session.get_update_states()
        if entity_id != 0
    }
    return int(common.pts), channels


def restart_breaks(
    cursor: Cursor | None, loaded: tuple[int, dict[int, int]] | None, cached: list[int]
) -> tuple[bool, list[int]] | None:
    """What a start breaks: None when everything (no cursor, or a session without update
    state); else whether the account's non-channel chats broke (the session's pts is past
    the cursor's) and which channels did: past the cursor, or unknown to either side
    (Telethon does not catch up a channel the session does not follow, so a cached one
    may have missed anything). ``cached`` are the chats the backend holds."""
    if cursor is None or loaded is None:
        return None
    pts, channels = loaded
    known = set(channels) | set(cursor.channels) | {c for c in cached if is_channel(c)}
    ended = [
        chat_id
        for chat_id in sorted(known)
        if chat_id not in channels or channels[chat_id] > cursor.channels.get(chat_id, 0)
    ]
    return pts > cursor.pts, ended


async def end_restart_breaks(
    backend: CacheBackend, account: str, loaded: tuple[int, dict[int, int]] | None
) -> float:
    """On the first use after a start: end the spans whose updates may have passed while
    the cache was not written (see `restart_breaks`). Returns when the cache was last
    known current (the cursor's ``current_at``; 0.0 without one)."""
    cursor = await backend.cursor(account)
    cached = await backend.chats(account)
    breaks = restart_breaks(cursor, loaded, cached)
    if cursor is None or breaks is None:
        await backend.end_spans(account, None)
        log.info("cache of account %s: no cursor to resume from; spans ended", account)
        return 0.0 if cursor is None else cursor.current_at
    account_broke, ended = breaks
    if account_broke:
        ended += [c for c in cached if not is_channel(c)]
    if ended:
        await backend.end_spans(account, ended)
        log.info("cache of account %s: %d span(s) ended on restart", account, len(ended))
    return cursor.current_at
