"""MemoryCacheBackend: the cache in this process's memory (lost on exit).

The reference for the merge rules of `CacheBackend`; for one process, tests, and as a
front for nothing else. Methods never await, so each is atomic on the event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import attrs

from ._backend import (
    ORPHAN_TOMBSTONES,
    CacheBackend,
    CachedDialog,
    CachedMessage,
    ChatUsage,
    Cursor,
    ReadMarks,
    Span,
    SpanState,
    is_channel,
)

__all__ = ["MemoryCacheBackend"]


@attrs.define
class _Chat:
    messages: dict[int, CachedMessage] = attrs.field(factory=dict)
    span: Span | None = None
    epoch: int = 0
    marks: ReadMarks = attrs.field(factory=ReadMarks)
    last_read: float = 0.0

    @property
    def held(self) -> bool:
        """Whether anything is cached (a dropped chat lives on empty, for its epoch)."""
        return (
            bool(self.messages)
            or self.span is not None
            or self.last_read > 0
            or (self.marks != ReadMarks())
        )


@attrs.define
class _Account:
    chats: dict[int, _Chat] = attrs.field(factory=dict)
    epoch: int = 0
    orphans: OrderedDict[int, int] = attrs.field(factory=OrderedDict)  # id -> pts
    cursor: Cursor | None = None
    dialogs: dict[int, CachedDialog] = attrs.field(factory=dict)
    dialog_span: Span | None = None
    dialog_epoch: int = 0
    entities: dict[int, bytes] = attrs.field(factory=dict)

    def chat(self, chat_id: int) -> _Chat:
        found = self.chats.get(chat_id)
        if found is None:
            found = self.chats[chat_id] = _Chat()
        return found

    def token(self, chat: _Chat | None) -> str:
        return f"{self.epoch}.{chat.epoch if chat else 0}"


class MemoryCacheBackend(CacheBackend):
    """Keeps the cache in a dict: fast, private to this process, gone on exit."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def __repr__(self) -> str:
        return f"<MemoryCacheBackend accounts={len(self._accounts)}>"

    def describe(self) -> str:
        return "memory"

    def _account(self, account: str) -> _Account:
        found = self._accounts.get(account)
        if found is None:
            found = self._accounts[account] = _Account()
        return found

    async def put_messages(self, account: str, messages: Sequence[CachedMessage]) -> None:
        acc = self._account(account)
        for message in messages:
            if not is_channel(message.chat_id) and message.id in acc.orphans:
                message = message.tombstone(acc.orphans.pop(message.id))
            chat = acc.chat(message.chat_id)
            old = chat.messages.get(message.id)
            if old is None or message.version > old.version:
                chat.messages[message.id] = message

    async def delete_ids(self, account: str, ids: Iterable[int], pts: int = 0) -> list[int]:
        acc = self._account(account)
        held: set[int] = set()
        for message_id in ids:
            found = False
            for chat_id, chat in acc.chats.items():
                old = chat.messages.get(message_id) if not is_channel(chat_id) else None
                if old is not None:
                    found = True
                    held.add(chat_id)
                    if not old.deleted:
                        chat.messages[message_id] = old.tombstone(pts)
            if not found:
                acc.orphans[message_id] = pts
                acc.orphans.move_to_end(message_id)
                while len(acc.orphans) > ORPHAN_TOMBSTONES:
                    acc.orphans.popitem(last=False)
        return sorted(held)

    async def get_message(
        self, account: str, chat_id: int, message_id: int
    ) -> CachedMessage | None:
        chat = self._account(account).chats.get(chat_id)
        return chat.messages.get(message_id) if chat else None

    async def history(
        self, account: str, chat_id: int, *, below: int | None, limit: int
    ) -> list[CachedMessage]:
        chat = self._account(account).chats.get(chat_id)
        if chat is None or limit <= 0:
            return []
        ids = sorted(
            (i for i, m in chat.messages.items() if not m.deleted and (below is None or i < below)),
            reverse=True,
        )
        return [chat.messages[i] for i in ids[:limit]]

    async def trim(self, account: str, chat_id: int, keep: int) -> int:
        chat = self._account(account).chats.get(chat_id)
        if chat is None:
            return 0
        live = sorted((i for i, m in chat.messages.items() if not m.deleted), reverse=True)
        if len(live) <= keep:
            return 0
        floor = live[keep - 1] if keep > 0 else live[0] + 1
        gone = [i for i in chat.messages if i < floor]
        removed = sum(1 for i in gone if not chat.messages[i].deleted)
        for i in gone:
            del chat.messages[i]
        if chat.span is not None:
            chat.span = attrs.evolve(chat.span, low=max(chat.span.low, floor), from_start=False)
        return removed

    async def span(self, account: str, chat_id: int) -> SpanState:
        acc = self._account(account)
        chat = acc.chats.get(chat_id)
        return SpanState(chat.span if chat else None, acc.token(chat))

    async def set_span(self, account: str, chat_id: int, span: Span, token: str) -> bool:
        acc = self._account(account)
        chat = acc.chats.get(chat_id)
        if acc.token(chat) != token:
            return False
        acc.chat(chat_id).span = span
        return True

    async def end_spans(self, account: str, chat_ids: Iterable[int] | None = None) -> None:
        acc = self._account(account)
        acc.dialog_epoch += 1
        acc.dialog_span = None
        if chat_ids is None:
            acc.epoch += 1
            for chat in acc.chats.values():
                chat.span = None
            return
        for chat_id in chat_ids:
            chat = acc.chat(chat_id)
            chat.epoch += 1
            chat.span = None

    async def read_marks(self, account: str, chat_id: int) -> ReadMarks:
        chat = self._account(account).chats.get(chat_id)
        return chat.marks if chat else ReadMarks()

    async def mark_read(
        self, account: str, chat_id: int, *, inbox_max_id: int = 0, outbox_max_id: int = 0
    ) -> None:
        chat = self._account(account).chat(chat_id)
        chat.marks = ReadMarks(
            max(chat.marks.inbox_max_id, inbox_max_id), max(chat.marks.outbox_max_id, outbox_max_id)
        )

    async def chats(self, account: str) -> list[int]:
        return sorted(i for i, chat in self._account(account).chats.items() if chat.held)

    async def drop_chat(self, account: str, chat_id: int) -> None:
        acc = self._account(account)
        old = acc.chats.pop(chat_id, None)
        acc.dialog_epoch += 1
        acc.dialog_span = None
        # The chat's epoch lives on so that a token read before the drop stays stale.
        acc.chat(chat_id).epoch = (old.epoch if old else 0) + 1

    async def touch(self, account: str, chat_id: int, when: float) -> None:
        chat = self._account(account).chat(chat_id)
        chat.last_read = max(chat.last_read, when)

    async def usage(self) -> list[ChatUsage]:
        return [
            ChatUsage(
                name, chat_id, sum(not m.deleted for m in chat.messages.values()), chat.last_read
            )
            for name, acc in self._accounts.items()
            for chat_id, chat in acc.chats.items()
            if chat.held
        ]

    async def cursor(self, account: str) -> Cursor | None:
        return self._account(account).cursor

    async def set_cursor(self, account: str, cursor: Cursor) -> None:
        acc = self._account(account)
        acc.cursor = merge_cursors(acc.cursor, cursor)

    async def dialogs(self, account: str) -> tuple[list[CachedDialog], SpanState]:
        acc = self._account(account)
        ordered = sorted(
            acc.dialogs.values(), key=lambda d: (d.pinned, d.top_date, d.top_id), reverse=True
        )
        return ordered, SpanState(acc.dialog_span, f"{acc.epoch}.{acc.dialog_epoch}")

    async def put_dialogs(
        self, account: str, dialogs: Sequence[CachedDialog], *, span: Span | None, token: str | None
    ) -> bool:
        acc = self._account(account)
        for dialog in dialogs:
            old = acc.dialogs.get(dialog.chat_id)
            if old is None or dialog.top_id >= old.top_id:
                acc.dialogs[dialog.chat_id] = dialog
        if span is None or token != f"{acc.epoch}.{acc.dialog_epoch}":
            return False
        acc.dialog_span = span
        return True

    async def put_entities(self, account: str, entities: Mapping[int, bytes]) -> None:
        self._account(account).entities.update(entities)

    async def entities(self, account: str, peer_ids: Iterable[int]) -> dict[int, bytes]:
        stored = self._account(account).entities
        return {i: stored[i] for i in peer_ids if i in stored}

    async def purge(self, account: str) -> None:
        old = self._accounts.pop(account, None)
        # Tokens handed out before the purge must not validate afterwards.
        self._account(account).epoch = (old.epoch if old else 0) + 1


def merge_cursors(old: Cursor | None, new: Cursor) -> Cursor:
    """The later of two cursors, field by field (pts never moves back)."""
    if old is None:
        return new
    channels = dict(old.channels)
    for channel_id, pts in new.channels.items():
        channels[channel_id] = max(pts, channels.get(channel_id, 0))
    return Cursor(
        pts=max(old.pts, new.pts),
        qts=max(old.qts, new.qts),
        date=max(old.date, new.date),
        seq=max(old.seq, new.seq),
        channels=channels,
        current_at=max(old.current_at, new.current_at),
    )
