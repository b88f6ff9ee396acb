"""The write path: updates the message box applied, turned into backend writes in order.

`UpdateWriter.apply` takes one fed entry (see `_compat.set_update_feed`) at a time, in the
order Telethon's message box applied them (pts order; catch-up differences included), and
writes what it means: a message's new version, a tombstone, a read mark, a dialog's top.
What breaks a chat's chain (a "too long" gap, a channel Telethon stops following, an own
message the cache cannot see) ends the spans it concerns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from telethon import utils
from telethon.tl import functions, types

from .. import _compat
from ._backend import CacheBackend, CachedDialog, CachedMessage, is_channel
from ._codec import Codec, raw_entities

__all__ = ["UpdateWriter"]

log = logging.getLogger("resilient_tg.cache")

_NEW = (types.UpdateNewMessage, types.UpdateNewChannelMessage)
_EDIT = (types.UpdateEditMessage, types.UpdateEditChannelMessage)

Fetch = Callable[[Any], Awaitable[Any]]


def _channel_chat(channel_id: int) -> int:
    return int(utils.get_peer_id(types.PeerChannel(channel_id)))


class UpdateWriter:
    """Applies fed updates of one account to a backend."""

    def __init__(
        self,
        backend: CacheBackend,
        account: str,
        codec: Codec,
        fetch: Fetch,
        state: Callable[[], dict[str, Any]],
        on_break: Callable[[], None],
        pinned: dict[int, bool],
    ) -> None:
        self._backend = backend
        self._account = account
        self._codec = codec
        self._fetch = fetch  # a request through the client (own sent messages)
        self._state = state  # the box's account state (qts and date for getDifference)
        self._on_break = on_break  # local fetches in flight must not anchor after a break
        self._pinned = pinned
        self.written: dict[int, int] = {}  # chat -> messages written since the last trim
        # What was last written, to skip rewriting it (most updates repeat their users
        # and chats): entity TL bytes by peer id, and each dialog's top id.
        self._entities: dict[int, bytes] = {}
        self._tops: dict[int, int] = {}

    async def apply(self, entries: Sequence[tuple[Any, Any, Any, int]]) -> None:
        """Write fed entries in order; consecutive message versions (new, edited, deleted
        channel messages) go to the backend in one write each for messages, entities and
        dialogs (the merge by version makes their order inside a batch irrelevant)."""
        batch = _Batch()
        for update, users, chats, pts in entries:
            if not self._collect(batch, update, users, chats, pts):
                await self._flush(batch)
                batch = _Batch()
                await self._apply_one(update, pts)
        await self._flush(batch)

    def _collect(self, batch: _Batch, update: Any, users: Any, chats: Any, pts: int) -> bool:
        """Add a message version to the batch; False for anything else."""
        own_pts = int(getattr(update, "pts", 0) or 0) or pts
        if isinstance(update, (*_NEW, *_EDIT)):
            message, new = update.message, isinstance(update, _NEW)
        elif isinstance(update, (types.UpdateShortMessage, types.UpdateShortChatMessage)):
            message, new = _short_message(update), True
        elif isinstance(update, types.UpdateDeleteChannelMessages):
            chat_id = _channel_chat(update.channel_id)
            batch.records += [
                CachedMessage(chat_id, int(i), date=0, pts=own_pts, deleted=True)
                for i in update.messages
            ]
            return True
        else:
            return False
        record = self._codec.record(message, own_pts)
        if record is None:
            return True
        batch.records.append(record)
        for peer_id, raw in raw_entities([*users, *chats]).items():
            if self._entities.get(peer_id) != raw:
                batch.entities[peer_id] = raw
        if new and record.id > self._tops.get(record.chat_id, 0):
            old = batch.dialogs.get(record.chat_id)
            if old is None or record.id > old.top_id:
                pinned = self._pinned.get(record.chat_id, False)
                batch.dialogs[record.chat_id] = CachedDialog(
                    record.chat_id, record.id, record.date, pinned
                )
        return True

    async def _flush(self, batch: _Batch) -> None:
        backend, account = self._backend, self._account
        if batch.entities:
            packed = {p: self._codec.pack(raw) for p, raw in batch.entities.items()}
            await backend.put_entities(account, packed)
            if len(self._entities) > 10_000:
                self._entities.clear()
            self._entities.update(batch.entities)
        if batch.records:
            await backend.put_messages(account, batch.records)
            for record in batch.records:
                if not record.deleted:
                    self.written[record.chat_id] = self.written.get(record.chat_id, 0) + 1
        if batch.dialogs:
            await backend.put_dialogs(account, list(batch.dialogs.values()), span=None, token=None)
            if len(self._tops) > 10_000:
                self._tops.clear()
            self._tops.update({d.chat_id: d.top_id for d in batch.dialogs.values()})

    async def _apply_one(self, update: Any, pts: int) -> None:
        backend, account = self._backend, self._account
        if isinstance(update, _compat.GapMark):
            self._on_break()
            # differenceTooLong: every chat of the account (channels too: conservative,
            # and it also covers chats no process has cached yet).
            await backend.end_spans(account, update.chat_ids)
            return
        if isinstance(update, _compat.BrokenChannel):
            self._on_break()
            await backend.end_spans(account, [_channel_chat(update.channel_id)])
            return
        own_pts = int(getattr(update, "pts", 0) or 0) or pts
        if isinstance(update, types.UpdateShortSentMessage):
            await self._own_sent(update)
        elif isinstance(update, types.UpdateDeleteMessages) and not update.messages:
            if update.pts_count:  # own deleteMessages/readHistory: Telethon drops the ids
                await self._own_affected(update)
        elif isinstance(update, types.UpdateDeleteMessages):
            await backend.delete_ids(account, list(update.messages), own_pts)
        elif isinstance(update, types.UpdateReadHistoryInbox):
            chat_id = int(utils.get_peer_id(update.peer))
            await backend.mark_read(account, chat_id, inbox_max_id=update.max_id)
        elif isinstance(update, types.UpdateReadHistoryOutbox):
            chat_id = int(utils.get_peer_id(update.peer))
            await backend.mark_read(account, chat_id, outbox_max_id=update.max_id)
        elif isinstance(update, types.UpdateReadChannelInbox):
            chat_id = _channel_chat(update.channel_id)
            await backend.mark_read(account, chat_id, inbox_max_id=update.max_id)
        elif isinstance(update, types.UpdateReadChannelOutbox):
            chat_id = _channel_chat(update.channel_id)
            await backend.mark_read(account, chat_id, outbox_max_id=update.max_id)

    async def _own_affected(self, update: Any) -> None:
        """A change this client made (messages.deleteMessages, readHistory...) whose answer
        gave only a pts: Telethon stands an id-less updateDeleteMessages in for it. The
        updates in that pts range are asked for again (updates.getDifference from just
        before it); if that fails, every private chat and basic group may have missed
        it, so their spans end."""
        start = update.pts - update.pts_count
        state = self._state()
        try:
            answer = await self._fetch(
                functions.updates.GetDifferenceRequest(
                    pts=start, date=state["date"], qts=state["qts"]
                )
            )
        except Exception as exc:  # noqa: BLE001 - any failure: end the spans instead
            log.info("cannot fetch own change at pts %d (%s); ending spans", update.pts, exc)
            answer = None
        found = [
            u
            for u in getattr(answer, "other_updates", None) or ()
            if start < int(getattr(u, "pts", 0) or 0) <= update.pts
        ]
        if answer is None or not isinstance(
            answer, (types.updates.Difference, types.updates.DifferenceSlice)
        ):
            await self._end_account_spans()
            return
        for found_update in found:
            if not (
                isinstance(found_update, types.UpdateDeleteMessages) and not found_update.messages
            ):
                await self._apply_one(found_update, update.pts)

    async def _end_account_spans(self) -> None:
        self._on_break()
        chats = await self._backend.chats(self._account)
        await self._backend.end_spans(self._account, [c for c in chats if not is_channel(c)])

    async def _own_sent(self, update: Any) -> None:
        """updateShortSentMessage names neither the chat nor the text: fetch the message
        by id (ids are one sequence per account); if that fails, the chain of every
        private chat and basic group may miss it, so their spans end."""
        try:
            answer = await self._fetch(
                functions.messages.GetMessagesRequest(id=[types.InputMessageID(update.id)])
            )
        except Exception as exc:  # noqa: BLE001 - any failure: end the spans instead
            log.info("cannot fetch own sent message %d (%s); ending spans", update.id, exc)
            answer = None
        found = [m for m in getattr(answer, "messages", ()) if isinstance(m, types.Message)]
        if found:
            batch = _Batch()
            for message in found:
                wrapped = types.UpdateNewMessage(message=message, pts=update.pts, pts_count=0)
                self._collect(batch, wrapped, answer.users, answer.chats, update.pts)
            await self._flush(batch)
            return
        await self._end_account_spans()


@attrs.define
class _Batch:
    records: list[CachedMessage] = attrs.field(factory=list)
    entities: dict[int, bytes] = attrs.field(factory=dict)  # raw TL bytes
    dialogs: dict[int, CachedDialog] = attrs.field(factory=dict)


def _short_message(update: Any) -> Any:
    """The Message an updateShortMessage / updateShortChatMessage stands for."""
    if isinstance(update, types.UpdateShortMessage):
        peer: Any = types.PeerUser(update.user_id)
        sender: Any = None if update.out else types.PeerUser(update.user_id)
    else:
        peer = types.PeerChat(update.chat_id)
        sender = types.PeerUser(update.from_id)
    return types.Message(
        id=update.id,
        peer_id=peer,
        date=update.date,
        message=update.message,
        out=update.out,
        mentioned=update.mentioned,
        media_unread=update.media_unread,
        silent=update.silent,
        from_id=sender,
        fwd_from=update.fwd_from,
        via_bot_id=update.via_bot_id,
        reply_to=update.reply_to,
        entities=update.entities,
        ttl_period=update.ttl_period,
    )
