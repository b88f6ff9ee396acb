"""The message methods users call, in private chats, basic groups and channels.

Private and basic-group messages live in each account's box and move its pts
(updateNewMessage, updateEditMessage, updateDeleteMessages, updateReadHistoryInbox /
Outbox); channel messages live in the channel and move the channel's pts (see
`._api_chats`). Reads, dialogs and updates.getDifference are in `._api_reads`.

Not modelled: drafts, pinned dialogs, folders, mentions, reactions, scheduled
messages, message search, forwarding, replies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import messages as messages_t

from . import _chat_ops as ops
from ._api_base import Api, CallContext, RpcFailure, _method
from ._chats import Channel
from ._world import Account, StoredMessage

MAX_HISTORY = 100


def _check_text(text: str | None) -> str:
    if not text or not text.strip():
        raise RpcFailure(400, "MESSAGE_EMPTY")
    if len(text) > 4096:
        raise RpcFailure(400, "MESSAGE_TOO_LONG")
    return text


def _box_of(me: Account, target: ops.Target) -> list[StoredMessage]:
    return [m for m in me.box if m.peer_type == target.peer_type and m.peer_id == target.peer_id]


# sendMessage, editMessage, deleteMessages ---------------------------------------------


@_method(functions.messages.SendMessageRequest)
def _send_message(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    target = ops.resolve(api, request.peer, me)
    text = _check_text(request.message)
    if target.channel is not None:
        return _send_to_channel(api, target.channel, me, text, request.random_id, ctx)
    if request.random_id in me.random_ids:
        raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
    if target.group is not None:
        copies = ops.group_send(
            api, target.group, me, text, skip_session=ctx.session_id, random_id=request.random_id
        )
        mine = copies[me.id]
        return types.Updates(
            updates=[
                types.UpdateMessageID(id=mine.id, random_id=request.random_id),
                types.UpdateNewMessage(
                    message=ops.tl_box_message(api, mine), pts=mine.pts, pts_count=1
                ),
            ],
            users=ops.users(api, [*target.group.members, me.id], me),
            chats=[ops.tl_group(target.group, me.id)],
            date=ops.date(mine.date),
            seq=0,
        )
    peer = target.account
    assert peer is not None
    if me.bot and peer.bot:
        raise RpcFailure(400, "USER_IS_BOT")
    out, incoming = api.world.deliver(me, peer, text, request.random_id)
    api._server._on_world_changed()
    api._server._push_new_message(me, peer, out, incoming, skip_session=ctx.session_id)
    return types.UpdateShortSentMessage(
        id=out.id, pts=out.pts, pts_count=1, date=ops.date(out.date), out=True
    )


def _send_to_channel(
    api: Api, channel: Channel, me: Account, text: str, random_id: int, ctx: CallContext
) -> types.Updates:
    if me.id not in channel.members:
        raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")
    if not channel.megagroup and me.id != channel.creator_id:
        raise RpcFailure(403, "CHAT_ADMIN_REQUIRED")
    if random_id in channel.random_ids:
        raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
    message, event = ops.post(
        api, channel, me, text, random_id=random_id, skip_session=ctx.session_id
    )
    update = ops.channel_update(api, channel, event, me.id)
    return ops.channel_updates(
        api,
        channel,
        [types.UpdateMessageID(id=message.id, random_id=random_id), update],
        me,
        [me.id],
    )


def edit_box_message(
    api: Api, me: Account, message: StoredMessage, text: str, skip_session: int | None
) -> Any:
    """Edit every copy of a private or basic-group message; returns the editor's update."""
    mine: Any = None
    when = int(ops.now().timestamp())
    for owner_id, copy in (ops.copies_of(api, message.link) or {me.id: message}).items():
        owner = api.world.accounts[owner_id]
        copy.text = text
        copy.edit_date = when
        event = ops.account_step(api, owner, "edit", message_ids=[copy.id])
        update = types.UpdateEditMessage(
            message=ops.tl_box_message(api, copy), pts=event.pts, pts_count=1
        )
        ops.push_account(
            api,
            owner,
            [update],
            user_ids=ops.box_user_ids([copy]),
            chats=ops.box_chats(api, [copy], owner_id),
            skip_session=skip_session if owner_id == me.id else None,
        )
        if owner_id == me.id:
            mine = update
    api._server._on_world_changed()
    return mine


@_method(functions.messages.EditMessageRequest)
def _edit_message(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    target = ops.resolve(api, request.peer, me)
    text = _check_text(request.message)
    if target.channel is not None:
        channel = target.channel
        found = channel.messages.get(request.id)
        if found is None or found.action is not None:
            raise RpcFailure(400, "MESSAGE_ID_INVALID")
        if found.from_id != me.id:
            raise RpcFailure(403, "MESSAGE_AUTHOR_REQUIRED")
        if found.text == text:
            raise RpcFailure(400, "MESSAGE_NOT_MODIFIED")
        _message, event = channel.edit_message(found.id, text)
        api._server._on_world_changed()
        ops.push_channel_event(api, channel, event, skip_session=ctx.session_id)
        update = ops.channel_update(api, channel, event, me.id)
        return ops.channel_updates(api, channel, [update], me, [me.id])
    box = {m.id: m for m in _box_of(me, target)}
    message_ = box.get(request.id)
    if message_ is None or message_.action is not None:
        raise RpcFailure(400, "MESSAGE_ID_INVALID")
    if not message_.out:
        raise RpcFailure(403, "MESSAGE_AUTHOR_REQUIRED")
    if message_.text == text:
        raise RpcFailure(400, "MESSAGE_NOT_MODIFIED")
    update = edit_box_message(api, me, message_, text, ctx.session_id)
    copy_users = ops.box_user_ids([message_])
    return types.Updates(
        updates=[update],
        users=ops.users(api, copy_users | {me.id}, me),
        chats=ops.box_chats(api, [message_], me.id),
        date=ops.now(),
        seq=0,
    )


def delete_box_messages(
    api: Api, me: Account, ids: Iterable[int], *, revoke: bool, skip_session: int | None
) -> messages_t.AffectedMessages:
    """Delete messages from ``me``'s box (and every copy when ``revoke``)."""
    mine = {m.id: m for m in me.box if m.id in set(ids)}
    doomed: dict[int, list[int]] = {me.id: list(mine)}
    if revoke:
        for message in mine.values():
            for owner_id, copy in ops.copies_of(api, message.link).items():
                if owner_id != me.id:
                    doomed.setdefault(owner_id, []).append(copy.id)
    result = messages_t.AffectedMessages(pts=me.pts, pts_count=0)
    for owner_id, gone in doomed.items():
        if not gone:
            continue
        owner = api.world.accounts[owner_id]
        owner.box[:] = [m for m in owner.box if m.id not in set(gone)]
        event = ops.account_step(api, owner, "delete", len(gone), message_ids=sorted(gone))
        update = types.UpdateDeleteMessages(
            messages=sorted(gone), pts=event.pts, pts_count=event.pts_count
        )
        ops.push_account(
            api, owner, [update], skip_session=skip_session if owner_id == me.id else None
        )
        if owner_id == me.id:
            result = messages_t.AffectedMessages(pts=event.pts, pts_count=event.pts_count)
    api._server._on_world_changed()
    return result


@_method(functions.messages.DeleteMessagesRequest)
def _delete_messages(api: Api, request: Any, ctx: CallContext) -> messages_t.AffectedMessages:
    me = api.me(ctx)
    return delete_box_messages(
        api, me, request.id, revoke=bool(request.revoke), skip_session=ctx.session_id
    )


@_method(functions.channels.DeleteMessagesRequest)
def _delete_channel_messages(
    api: Api, request: Any, ctx: CallContext
) -> messages_t.AffectedMessages:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    for message_id in request.id:
        found = channel.messages.get(message_id)
        if found is not None and found.from_id != me.id and me.id != channel.creator_id:
            raise RpcFailure(403, "MESSAGE_DELETE_FORBIDDEN")
    event = channel.delete_messages(list(request.id))
    if event is None:
        return messages_t.AffectedMessages(pts=channel.pts, pts_count=0)
    api._server._on_world_changed()
    ops.push_channel_event(api, channel, event, skip_session=ctx.session_id)
    return messages_t.AffectedMessages(pts=event.pts, pts_count=event.pts_count)


# getHistory, getMessages ----------------------------------------------------------------


def _page(found: list[Any], request: Any) -> list[Any]:
    """A getHistory window, as Telegram cuts it: newest first, starting at the first
    message older than offset_id (or offset_date), moved by add_offset (negative:
    newer messages, which is how reverse iteration pages), then max_id/min_id."""
    ordered = sorted(found, key=lambda m: m.id, reverse=True)
    stamp = int(request.offset_date.timestamp()) if request.offset_date else 0
    start = 0
    if request.offset_id:
        start = next((i for i, m in enumerate(ordered) if m.id < request.offset_id), len(ordered))
    elif stamp > 0:  # offset_id wins; an absent offset_date arrives as the epoch
        start = next((i for i, m in enumerate(ordered) if m.date < stamp), len(ordered))
    limit = max(0, min(request.limit or MAX_HISTORY, MAX_HISTORY))
    low = start + request.add_offset
    window = ordered[max(0, low) : max(0, low + limit)]
    if request.max_id:
        window = [m for m in window if m.id < request.max_id]
    if request.min_id:
        window = [m for m in window if m.id > request.min_id]
    return window


@_method(functions.messages.GetHistoryRequest)
def _get_history(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    target = ops.resolve(api, request.peer, me)
    if target.channel is not None:
        channel = target.channel
        page = _page(list(channel.messages.values()), request)
        return messages_t.ChannelMessages(
            pts=channel.pts,
            count=len(channel.messages),
            messages=[ops.tl_channel_message(api, channel, m, me.id) for m in page],
            topics=[],
            chats=[ops.tl_channel(channel, me.id)],
            users=ops.users(api, ops.channel_user_ids(channel, page), me),
        )
    box = _box_of(me, target)
    page = _page(box, request)
    messages = [ops.tl_box_message(api, m) for m in page]
    user_ids = ops.box_user_ids(page) | {target.peer_id if target.account else me.id, me.id}
    chats = [ops.tl_group(target.group, me.id)] if target.group else []
    users = ops.users(api, user_ids, me)
    if len(page) < len(box):
        return messages_t.MessagesSlice(
            count=len(box), messages=messages, topics=[], chats=chats, users=users
        )
    return messages_t.Messages(messages=messages, topics=[], chats=chats, users=users)


def _wanted_ids(ids: list[Any]) -> list[int | None]:
    return [i.id if isinstance(i, types.InputMessageID) else None for i in ids]


@_method(functions.messages.GetMessagesRequest)
def _get_messages(api: Api, request: Any, ctx: CallContext) -> messages_t.Messages:
    """Messages of the account's box by id (private chats and basic groups)."""
    me = api.me(ctx)
    box = {m.id: m for m in me.box}
    found = [box.get(i) if i is not None else None for i in _wanted_ids(request.id)]
    present = [m for m in found if m is not None]
    return messages_t.Messages(
        messages=[
            ops.tl_box_message(api, m) if m is not None else types.MessageEmpty(id=0, peer_id=None)
            for m in found
        ],
        topics=[],
        chats=ops.box_chats(api, present, me.id),
        users=ops.users(api, ops.box_user_ids(present) | {me.id}, me),
    )


@_method(functions.channels.GetMessagesRequest)
def _get_channel_messages(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    wanted = _wanted_ids(request.id)
    found = [channel.messages.get(i) if i is not None else None for i in wanted]
    present = [m for m in found if m is not None]
    return messages_t.ChannelMessages(
        pts=channel.pts,
        count=len(present),
        messages=[
            ops.tl_channel_message(api, channel, m, me.id)
            if m is not None
            else types.MessageEmpty(id=i or 0, peer_id=types.PeerChannel(channel.id))
            for m, i in zip(found, wanted, strict=True)
        ],
        topics=[],
        chats=[ops.tl_channel(channel, me.id)],
        users=ops.users(api, ops.channel_user_ids(channel, present), me),
    )
