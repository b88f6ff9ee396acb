"""The read-through path: what a read fetches from Telegram, and how the answer is stored.

A history answer is stored with the pts the message box had applied *before* the request
was sent (see `HistoryFetch`): every update with a pts up to that one was on the server
before it answered, so such an update arriving later cannot replace the answer's version
(the backend's merge keeps a stored version unless the new one is strictly newer), and a
cached message at or below that pts that the answer no longer holds was deleted meanwhile
(it gets a tombstone). Anything newer is left to the updates that will follow.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
from telethon import utils
from telethon.tl import functions, types

from .. import _compat
from ._answer import DialogEntry
from ._backend import CacheBackend, CachedDialog, CachedMessage, Span, SpanState, is_channel
from ._codec import Codec, load_messages, timestamp

__all__ = [
    "HISTORY_PAGE",
    "HistoryFetch",
    "anchored_span",
    "cached_dialogs",
    "channel_of",
    "chat_id_of",
    "covers",
    "input_peer",
    "peer_entities",
]

HISTORY_PAGE = 100  # Telegram's largest getHistory page


def channel_of(chat_id: int) -> int | None:
    """The bare channel id of a marked channel id (None for other chats)."""
    return -chat_id - 1_000_000_000_000 if is_channel(chat_id) else None


def peer_entities(answer: Any) -> dict[int, Any]:
    """An answer's users and chats by marked id (for ``Message._finish_init``)."""
    found: dict[int, Any] = {}
    for entity in [*getattr(answer, "users", ()), *getattr(answer, "chats", ())]:
        found[int(utils.get_peer_id(entity))] = entity
    return found


@attrs.define
class HistoryFetch:
    """One getHistory page for a chat, stored; says what it proves."""

    backend: CacheBackend
    account: str
    codec: Codec
    chat_id: int
    offset_id: int
    limit: int
    pts_before: int = 0
    messages: list[Any] = attrs.field(factory=list)
    reached_start: bool = False
    low: int = 0  # the oldest id the page proves (1 when it reached the chat's start)

    async def run(self, telegram: Any, peer: Any) -> None:
        self.pts_before = _compat.box_pts(telegram, channel_of(self.chat_id))
        answer = await telegram(
            functions.messages.GetHistoryRequest(
                peer=peer,
                offset_id=self.offset_id,
                offset_date=None,
                add_offset=0,
                limit=self.limit,
                max_id=0,
                min_id=0,
                hash=0,
            )
        )
        raw = list(getattr(answer, "messages", ()))
        channel = channel_of(self.chat_id)
        if channel is not None:
            # A span of a channel the box does not follow would miss what a reconnect or
            # a restart does not fetch: follow it from this answer's pts on.
            pts = int(getattr(answer, "pts", 0) or 0)
            _compat.follow_channel(telegram, channel, pts, answer.users, answer.chats)
        entities = peer_entities(answer)
        self.messages = [
            m
            for m in raw
            if isinstance(m, (types.Message, types.MessageService))
            and int(utils.get_peer_id(m.peer_id)) == self.chat_id
        ]
        for message in self.messages:
            message._finish_init(telegram, entities, None)
        self.reached_start = len(raw) < self.limit
        ids = [int(m.id) for m in self.messages]
        self.low = 1 if self.reached_start or not ids else min(ids)
        await self._store(answer)

    async def _store(self, answer: Any) -> None:
        backend, account, pts = self.backend, self.account, self.pts_before
        entities = self.codec.entities([*answer.users, *answer.chats])
        if entities:
            await backend.put_entities(account, entities)
        records = [r for r in (self.codec.record(m, pts) for m in self.messages) if r]
        # What the cache holds in the answered range but the answer does not: deleted,
        # unless it reached the cache after the request was sent (a pts above pts_before).
        present = {r.id for r in records}
        below = self.offset_id or None
        held = await backend.history(account, self.chat_id, below=below, limit=10_000)
        gone = [
            c.tombstone(pts)
            for c in held
            if c.id >= self.low and c.id not in present and c.pts <= pts
        ]
        await backend.put_messages(account, [*records, *gone])


async def input_peer(
    telegram: Any, backend: CacheBackend, account: str, codec: Codec, chat_id: int
) -> Any:
    """Telethon's input peer for a chat; the cached entity when Telethon knows none."""
    try:
        return await telegram.get_input_entity(chat_id)
    except ValueError:
        found = await backend.entities(account, [chat_id])
        if chat_id not in found:
            raise
        return utils.get_input_peer(codec.entity(found[chat_id]))


def anchored_span(fetch: HistoryFetch, state: SpanState, now: float) -> Span | None:
    """The span a fetched page proves, joined with the chat's current one, or None when
    it is not contiguous with it (a page from the middle of an unknown history)."""
    span = state.span
    if fetch.offset_id == 0 or (span is not None and fetch.offset_id >= span.low):
        low, from_start = fetch.low, fetch.reached_start
    else:
        return None
    if span is not None:
        low, from_start = min(low, span.low), from_start or span.from_start
    return Span(low=low, from_start=from_start, anchored_at=now)


async def fetch_message(
    telegram: Any, backend: CacheBackend, account: str, codec: Codec, chat_id: int, message_id: int
) -> Any:
    """One message by id from Telegram (stored), or None if the chat has no such message."""
    channel = channel_of(chat_id)
    pts = _compat.box_pts(telegram, channel)
    ids = [types.InputMessageID(message_id)]
    if channel is not None:
        request: Any = functions.channels.GetMessagesRequest(
            channel=await telegram.get_input_entity(chat_id), id=ids
        )
    else:
        request = functions.messages.GetMessagesRequest(id=ids)
    answer = await telegram(request)
    entities = peer_entities(answer)
    stored = codec.entities(entities.values())
    if stored:
        await backend.put_entities(account, stored)
    found = None
    records: list[CachedMessage] = []
    for message in getattr(answer, "messages", ()):
        record = codec.record(message, pts)
        if record is None:
            continue
        records.append(record)
        if record.chat_id == chat_id and record.id == message_id:
            message._finish_init(telegram, entities, None)
            found = message
    if records:
        await backend.put_messages(account, records)
    return found


async def fetch_dialogs(
    telegram: Any,
    backend: CacheBackend,
    account: str,
    codec: Codec,
    pinned: dict[int, bool],
    state: SpanState,
    *,
    anchor: bool,
) -> list[tuple[CachedDialog, Any, Any]]:
    """Every dialog Telegram returns on one page (stored); the dialog list's span is set
    when the page holds them all and ``anchor`` (taken while CONNECTED)."""
    answer = await telegram(
        functions.messages.GetDialogsRequest(
            offset_date=None,
            offset_id=0,
            offset_peer=types.InputPeerEmpty(),
            limit=HISTORY_PAGE,
            hash=0,
        )
    )
    entities = peer_entities(answer)
    stored = codec.entities(entities.values())
    if stored:
        await backend.put_entities(account, stored)
    tops: dict[tuple[int, int], Any] = {}
    records: list[CachedMessage] = []
    for message in answer.messages:
        record = codec.record(message, 0)
        if record is not None:
            message._finish_init(telegram, entities, None)
            tops[(record.chat_id, record.id)] = message
            records.append(
                attrs.evolve(record, pts=_compat.box_pts(telegram, channel_of(record.chat_id)))
            )
    if records:
        await backend.put_messages(account, records)
    found: list[tuple[CachedDialog, Any, Any]] = []
    for dialog in answer.dialogs:
        if not isinstance(dialog, types.Dialog):
            continue
        chat_id = int(utils.get_peer_id(dialog.peer))
        top = tops.get((chat_id, int(dialog.top_message)))
        pinned[chat_id] = bool(dialog.pinned)
        entry = CachedDialog(
            chat_id,
            int(dialog.top_message),
            int(top.date.timestamp()) if top is not None else 0,
            bool(dialog.pinned),
        )
        found.append((entry, entities.get(chat_id), top))
    whole = len(answer.dialogs) < HISTORY_PAGE
    span = Span(low=0, from_start=True, anchored_at=time.time()) if whole and anchor else None
    await backend.put_dialogs(
        account, [d for d, _, _ in found], span=span, token=state.token if span else None
    )
    return found


def sorted_dialogs(
    found: Sequence[tuple[CachedDialog, Any, Any]],
) -> list[tuple[CachedDialog, Any, Any]]:
    """Pinned first, then by the top message's date and id, newest first."""
    return sorted(found, key=lambda f: (f[0].pinned, f[0].top_date, f[0].top_id), reverse=True)


def covers(span: Span, records: list[CachedMessage], limit: int) -> bool:
    """Whether a span proves ``records`` (newest first) are the whole answer."""
    if len(records) == limit:
        return span.from_start or records[-1].id >= span.low
    return bool(span.from_start)


def chat_id_of(chat: Any) -> int:
    """A marked peer id (-100... for channels) from an int, a peer or an entity."""
    if isinstance(chat, int) and not isinstance(chat, bool):
        return chat
    return int(utils.get_peer_id(chat))


async def cached_dialogs(
    backend: CacheBackend, account: str, codec: Codec, dialogs: list[CachedDialog], client: Any
) -> list[DialogEntry]:
    """Dialog entries from the cache: each chat's newest live message and its entity."""
    entries = []
    for dialog in dialogs:
        top = await backend.history(account, dialog.chat_id, below=None, limit=1)
        messages = await load_messages(backend, account, codec, top, client)
        stored = await backend.entities(account, [dialog.chat_id])
        entity = codec.entity(stored[dialog.chat_id]) if dialog.chat_id in stored else None
        message = messages[0] if messages else None
        entries.append(
            DialogEntry(
                dialog.chat_id,
                message.id if message is not None else dialog.top_id,
                timestamp(message.date) if message is not None else dialog.top_date,
                dialog.pinned,
                entity,
                message,
            )
        )
    return entries
