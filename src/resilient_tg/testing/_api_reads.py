"""Read marks, dialogs and updates.getDifference.

messages.readHistory moves the reader's read_inbox_max_id (and pts: the reader's other
sessions get updateReadHistoryInbox) and the read_outbox_max_id of whoever sent the
messages read (updateReadHistoryOutbox); channels.readHistory moves the member's mark
in the channel (updateReadChannelInbox to the reader's other sessions,
updateReadChannelOutbox to the senders). Dialogs report these marks truthfully.

updates.getDifference answers the account's own log (new messages, and edits,
deletes and reads in other_updates) and names, with updateChannelTooLong, every
channel of the account whose pts moved past what getChannelDifference last answered
on the calling auth key; the client then asks getChannelDifference for it. Telegram
does not document its own rule (it may also inline channel updates); this one never
lets a channel update pushed to a dead link go unnoticed, at the cost of one cheap
getChannelDifference per active channel after each getDifference.
"""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import messages as messages_t
from telethon.tl.types import updates as updates_t

from . import _chat_ops as ops
from ._api_base import DIFFERENCE_LIMIT, Api, CallContext, RpcFailure, _method
from ._chats import AccountEvent, Channel
from ._world import Account, StoredMessage

MAX_DIALOGS = 100


# readHistory ---------------------------------------------------------------------------


def _peer_of(peer_type: str, peer_id: int) -> Any:
    return types.PeerChat(peer_id) if peer_type == "chat" else types.PeerUser(peer_id)


@_method(functions.messages.ReadHistoryRequest)
def _read_history(api: Api, request: Any, ctx: CallContext) -> messages_t.AffectedMessages:
    me = api.me(ctx)
    target = ops.resolve(api, request.peer, me)
    if target.channel is not None:
        raise RpcFailure(400, "PEER_ID_INVALID")  # channels use channels.readHistory
    return read_box(api, me, target.peer_type, target.peer_id, request.max_id, ctx.session_id)


def read_box(
    api: Api, me: Account, peer_type: str, peer_id: int, max_id: int, skip_session: int | None
) -> messages_t.AffectedMessages:
    chats = api.world.chats
    dialog = [m for m in me.box if m.peer_type == peer_type and m.peer_id == peer_id]
    incoming = [m for m in dialog if not m.out]
    top = max((m.id for m in incoming), default=0)
    upto = top if max_id <= 0 else min(max_id, top)
    marks = chats.read_state(me.id, peer_type, peer_id)
    if upto <= marks[0]:
        return messages_t.AffectedMessages(pts=me.pts, pts_count=0)
    marks[0] = upto
    still = sum(1 for m in incoming if m.id > upto)
    event = ops.account_step(
        api, me, "read_inbox", peer_type=peer_type, peer_id=peer_id, max_id=upto
    )
    ops.push_account(
        api,
        me,
        [_read_inbox_update(event, still)],
        user_ids=[peer_id] if peer_type == "user" else [],
        chats=ops.box_chats(api, dialog[-1:], me.id),
        skip_session=skip_session,
    )
    read_links = {m.link for m in incoming if m.id <= upto and m.link is not None}
    _mark_outbox(api, me, peer_type, peer_id, read_links)
    api._server._on_world_changed()
    return messages_t.AffectedMessages(pts=event.pts, pts_count=1)


def _read_inbox_update(event: AccountEvent, still_unread: int) -> types.UpdateReadHistoryInbox:
    return types.UpdateReadHistoryInbox(
        peer=_peer_of(event.peer_type, event.peer_id),
        max_id=event.max_id,
        still_unread_count=still_unread,
        pts=event.pts,
        pts_count=event.pts_count,
    )


def _mark_outbox(
    api: Api, reader: Account, peer_type: str, peer_id: int, read_links: set[int]
) -> None:
    """Tell the senders of the messages just read how far their outbox is read."""
    chats = api.world.chats
    senders = [peer_id] if peer_type == "user" else list(chats.groups[peer_id].members)
    for sender_id in senders:
        sender = api.world.accounts.get(sender_id)
        if sender is None or sender is reader:
            continue
        # The dialog as the sender sees it: with the reader, or the same group.
        their_peer = reader.id if peer_type == "user" else peer_id
        newest = max(
            (
                m.id
                for m in sender.box
                if m.out
                and m.peer_type == peer_type
                and m.peer_id == their_peer
                and m.link in read_links
            ),
            default=0,
        )
        marks = chats.read_state(sender.id, peer_type, their_peer)
        if newest <= marks[1]:
            continue
        marks[1] = newest
        event = ops.account_step(
            api, sender, "read_outbox", peer_type=peer_type, peer_id=their_peer, max_id=newest
        )
        update = types.UpdateReadHistoryOutbox(
            peer=_peer_of(peer_type, their_peer), max_id=newest, pts=event.pts, pts_count=1
        )
        groups = [chats.groups[peer_id]] if peer_type == "chat" else []
        ops.push_account(
            api,
            sender,
            [update],
            user_ids=[reader.id],
            chats=[ops.tl_group(g, sender.id) for g in groups],
        )


@_method(functions.channels.ReadHistoryRequest)
def _read_channel_history(api: Api, request: Any, ctx: CallContext) -> bool:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    member = channel.members.get(me.id)
    if member is None:
        raise RpcFailure(400, "CHANNEL_PRIVATE")
    top = channel.top_message_id()
    upto = top if request.max_id <= 0 else min(request.max_id, top)
    if upto <= member.read_inbox_max_id:
        return True
    before = {m.user_id: channel.read_outbox_max_id(m.user_id) for m in channel.members.values()}
    member.read_inbox_max_id = upto
    api._server._on_world_changed()
    inbox = types.UpdateReadChannelInbox(
        channel_id=channel.id,
        max_id=upto,
        still_unread_count=channel.unread_count(me.id),
        pts=channel.pts,
    )
    chat = [ops.tl_channel(channel, me.id)]
    ops.push_account(api, me, [inbox], chats=chat, skip_session=ctx.session_id)
    for other in list(channel.members.values()):
        account = api.world.accounts.get(other.user_id)
        outbox = channel.read_outbox_max_id(other.user_id)
        if account is None or other.user_id == me.id or outbox <= before[other.user_id]:
            continue
        ops.push_account(
            api,
            account,
            [types.UpdateReadChannelOutbox(channel_id=channel.id, max_id=outbox)],
            chats=[ops.tl_channel(channel, other.user_id)],
        )
    return True


# Dialogs -------------------------------------------------------------------------------


def _empty_dialog(peer: Any, top: int, inbox: int, outbox: int, unread: int) -> types.Dialog:
    return types.Dialog(
        peer=peer,
        top_message=top,
        read_inbox_max_id=inbox,
        read_outbox_max_id=outbox,
        unread_count=unread,
        unread_mentions_count=0,
        unread_reactions_count=0,
        unread_poll_votes_count=0,
        notify_settings=types.PeerNotifySettings(),
    )


def _box_dialog(api: Api, me: Account, last: StoredMessage) -> types.Dialog:
    inbox, outbox = api.world.chats.read_state(me.id, last.peer_type, last.peer_id)
    unread = sum(
        1
        for m in me.box
        if m.peer_type == last.peer_type
        and m.peer_id == last.peer_id
        and not m.out
        and m.id > inbox
    )
    return _empty_dialog(ops.box_peer(last), last.id, inbox, outbox, unread)


def _channel_dialog(channel: Channel, me: Account) -> types.Dialog:
    member = channel.members[me.id]
    dialog = _empty_dialog(
        types.PeerChannel(channel.id),
        channel.top_message_id(),
        member.read_inbox_max_id,
        channel.read_outbox_max_id(me.id),
        channel.unread_count(me.id),
    )
    dialog.pts = channel.pts
    return dialog


class _Dialogs:
    """Dialogs of one account, newest first, with their top messages and peers."""

    def __init__(self, api: Api, me: Account) -> None:
        self.api, self.me = api, me
        self.rows: list[tuple[int, Any, types.Dialog, Any]] = []  # (date, key, dialog, msg)
        self._user_ids: set[int] = {me.id}
        self._chats: dict[Any, Any] = {}
        last: dict[tuple[str, int], StoredMessage] = {}
        for message in me.box:
            last[(message.peer_type, message.peer_id)] = message
        for key, message in last.items():
            self.rows.append(
                (message.date, key, _box_dialog(api, me, message), ops.tl_box_message(api, message))
            )
            self._user_ids |= ops.box_user_ids([message])
            if message.peer_type == "chat":
                group = api.world.chats.groups.get(message.peer_id)
                if group is not None:
                    self._chats[key] = ops.tl_group(group, me.id)
        for channel in api.world.chats.channels.values():
            if me.id not in channel.members:
                continue
            key = ("channel", channel.id)
            top = channel.messages.get(channel.top_message_id())
            when = top.date if top else channel.date
            tl_top = ops.tl_channel_message(api, channel, top, me.id) if top else None
            self.rows.append((when, key, _channel_dialog(channel, me), tl_top))
            self._chats[key] = ops.tl_channel(channel, me.id)
            if top is not None:
                self._user_ids |= ops.channel_user_ids(channel, [top])
        self.rows.sort(key=lambda row: (row[0], row[2].top_message), reverse=True)

    def answer(self, keys: list[Any]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        rows = [r for r in self.rows if r[1] in keys] if keys else self.rows
        return (
            [r[2] for r in rows],
            [r[3] for r in rows if r[3] is not None],
            [self._chats[r[1]] for r in rows if r[1] in self._chats],
            ops.users(self.api, self._user_ids, self.me),
        )


@_method(functions.messages.GetDialogsRequest)
def _get_dialogs(api: Api, request: Any, ctx: CallContext) -> messages_t.Dialogs:
    """Every dialog (up to ``limit``, at most 100) in one answer; offsets are not modelled."""
    me = api.me(ctx)
    found = _Dialogs(api, me)
    found.rows = found.rows[: max(0, min(request.limit or MAX_DIALOGS, MAX_DIALOGS))]
    dialogs, messages, chats, users = found.answer([])
    return messages_t.Dialogs(dialogs=dialogs, messages=messages, chats=chats, users=users)


@_method(functions.messages.GetPeerDialogsRequest)
def _get_peer_dialogs(api: Api, request: Any, ctx: CallContext) -> messages_t.PeerDialogs:
    me = api.me(ctx)
    keys: list[Any] = []
    for dialog_peer in request.peers:
        if not isinstance(dialog_peer, types.InputDialogPeer):
            raise RpcFailure(400, "PEER_ID_INVALID")
        target = ops.resolve(api, dialog_peer.peer, me)
        keys.append((target.peer_type, target.peer_id))
    found = _Dialogs(api, me)
    dialogs, messages, chats, users = found.answer(keys)
    return messages_t.PeerDialogs(
        dialogs=dialogs, messages=messages, chats=chats, users=users, state=api.state(me)
    )


# updates.getDifference -----------------------------------------------------------------


def _event_update(api: Api, me: Account, event: AccountEvent) -> Any | None:
    if event.kind == "delete":
        return types.UpdateDeleteMessages(
            messages=list(event.message_ids), pts=event.pts, pts_count=event.pts_count
        )
    if event.kind == "edit":
        message = next((m for m in me.box if m.id == event.message_ids[0]), None)
        if message is None:
            return None
        return types.UpdateEditMessage(
            message=ops.tl_box_message(api, message), pts=event.pts, pts_count=1
        )
    peer = _peer_of(event.peer_type, event.peer_id)
    if event.kind == "read_inbox":
        return types.UpdateReadHistoryInbox(
            peer=peer, max_id=event.max_id, still_unread_count=0, pts=event.pts, pts_count=1
        )
    return types.UpdateReadHistoryOutbox(peer=peer, max_id=event.max_id, pts=event.pts, pts_count=1)


def _channels_moved(api: Api, me: Account, key_id: bytes) -> list[Channel]:
    """Channels of the account whose pts moved past what getChannelDifference last
    answered on this auth key (live pushes may have been lost, so they do not count)."""
    confirmed = api.world.chats.confirmed
    return [
        c
        for c in api.world.chats.channels.values()
        if me.id in c.members and c.pts > confirmed.get((key_id, c.id), 0)
    ]


@_method(functions.updates.GetDifferenceRequest)
def _get_difference(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    if request.pts > me.pts:
        # A client ahead of the server (e.g. after a restart that lost state).
        return updates_t.DifferenceTooLong(pts=me.pts)
    # Telegram: differenceTooLong when pts + pts_total_limit < the server's pts.
    too_long = api._server.difference_limit
    if request.pts_total_limit:
        too_long = min(too_long or request.pts_total_limit, request.pts_total_limit)
    if too_long is not None and me.pts - request.pts > too_long:
        return updates_t.DifferenceTooLong(pts=me.pts)
    moved = _channels_moved(api, me, ctx.record.key_id)
    missed: list[tuple[int, StoredMessage | AccountEvent]] = [
        (m.pts, m) for m in me.box if m.pts > request.pts
    ]
    missed += [(e.pts, e) for e in api.world.chats.log_for(me.id) if e.pts > request.pts]
    missed.sort(key=lambda item: item[0])
    if not missed and not moved:
        return updates_t.DifferenceEmpty(date=ops.now(), seq=0)
    limit = DIFFERENCE_LIMIT
    if request.pts_total_limit:
        limit = min(limit, request.pts_total_limit)
    batch = missed[:limit]
    messages = [item for _, item in batch if isinstance(item, StoredMessage)]
    other: list[Any] = [types.UpdateChannelTooLong(channel_id=c.id, pts=c.pts) for c in moved]
    for _, item in batch:
        if isinstance(item, AccountEvent):
            update = _event_update(api, me, item)
            if update is not None:
                other.append(update)
    chats = ops.box_chats(api, messages, me.id) + [ops.tl_channel(c, me.id) for c in moved]
    user_ids = ops.box_user_ids(messages) | {me.id}
    common: dict[str, Any] = {
        "new_messages": [ops.tl_box_message(api, m) for m in messages],
        "new_encrypted_messages": [],
        "other_updates": other,
        "chats": chats,
        "users": ops.users(api, user_ids, me),
    }
    if len(batch) < len(missed):
        last_pts = batch[-1][0]
        return updates_t.DifferenceSlice(
            **common,
            intermediate_state=updates_t.State(
                pts=last_pts, qts=0, date=request.date, seq=0, unread_count=0
            ),
        )
    return updates_t.Difference(**common, state=api.state(me))
