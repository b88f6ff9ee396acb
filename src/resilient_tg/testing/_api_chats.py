"""API methods that make and manage channels, supergroups and basic groups, and
updates.getChannelDifference.

Every channel change moves the channel's own pts and reaches the members' live
sessions as ``updates`` (see `._chat_ops`); a client that missed some asks
getChannelDifference, answered from the channel's event log: channelDifferenceEmpty,
channelDifference (new messages, and edits and deletes in other_updates), or
channelDifferenceTooLong (the dialog and the latest messages, nothing in between).

TooLong comes, as Telegram documents it ("pts + limit < remote pts"), when the gap in
pts is larger than the request's ``limit`` (Telethon asks 100 for users, 100,000 for
bots), or than ``server.channel_difference_limit`` (default 500) if that is smaller.
"""

from __future__ import annotations

from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import channels as channels_t
from telethon.tl.types import contacts as contacts_t
from telethon.tl.types import messages as messages_t
from telethon.tl.types import updates as updates_t

from . import _chat_ops as ops
from ._api_base import Api, CallContext, RpcFailure, _method
from ._chats import Channel, Member
from ._world import Account

# Latest messages a channelDifferenceTooLong carries (Telegram sends "the latest").
TOO_LONG_MESSAGES = 100


def _invited(updates: types.Updates) -> messages_t.InvitedUsers:
    return messages_t.InvitedUsers(updates=updates, missing_invitees=[])


def _join(
    api: Api, channel: Channel, joiners: list[Account], inviter: Account, ctx: CallContext
) -> types.Updates:
    """Add members; a supergroup gets a service message, a broadcast channel just an
    updateChannel for the newcomers. Returns the caller's answer."""
    when = int(ops.now().timestamp())
    for account in joiners:
        channel.members[account.id] = Member(user_id=account.id, date=when, inviter_id=inviter.id)
    api._server._on_world_changed()
    if channel.megagroup:
        message, event = channel.add_message(
            inviter.id, "", action="add_user", action_users=[a.id for a in joiners]
        )
        ops.push_channel_event(api, channel, event, skip_session=ctx.session_id)
        update = ops.channel_update(api, channel, event, inviter.id)
        user_ids = ops.channel_user_ids(channel, [message])
        return ops.channel_updates(api, channel, [update], inviter, user_ids)
    for account in joiners:
        ops.push_account(
            api,
            account,
            [types.UpdateChannel(channel_id=channel.id)],
            chats=[ops.tl_channel(channel, account.id)],
            skip_session=ctx.session_id,
        )
    return ops.channel_updates(
        api, channel, [types.UpdateChannel(channel_id=channel.id)], inviter, ()
    )


@_method(functions.channels.CreateChannelRequest)
def _create_channel(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    if not request.title or not request.title.strip():
        raise RpcFailure(400, "CHAT_TITLE_EMPTY")
    channel = api.world.chats.new_channel(me.id, request.title, megagroup=bool(request.megagroup))
    _message, event = channel.add_message(me.id, "", action="create")
    api._server._on_world_changed()
    ops.push_channel_event(api, channel, event, skip_session=ctx.session_id)
    update = ops.channel_update(api, channel, event, me.id)
    return ops.channel_updates(
        api, channel, [types.UpdateChannel(channel_id=channel.id), update], me, [me.id]
    )


@_method(functions.channels.InviteToChannelRequest)
def _invite_to_channel(api: Api, request: Any, ctx: CallContext) -> messages_t.InvitedUsers:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    if me.id not in channel.members:
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    if not channel.megagroup and me.id != channel.creator_id:
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    joiners: list[Account] = []
    for input_user in request.users:
        try:
            account = api.resolve_peer(input_user, me)
        except RpcFailure:
            raise RpcFailure(400, "USER_ID_INVALID") from None
        if account.id not in channel.members and account not in joiners:
            joiners.append(account)
    if not joiners:
        raise RpcFailure(400, "USER_ALREADY_PARTICIPANT")
    return _invited(_join(api, channel, joiners, me, ctx))


@_method(functions.channels.JoinChannelRequest)
def _join_channel(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    if me.id in channel.members:
        raise RpcFailure(400, "USER_ALREADY_PARTICIPANT")
    return _join(api, channel, [me], me, ctx)


@_method(functions.channels.LeaveChannelRequest)
def _leave_channel(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me, member=False)
    if me.id not in channel.members:
        raise RpcFailure(400, "USER_NOT_PARTICIPANT")
    del channel.members[me.id]
    api._server._on_world_changed()
    updates: list[Any] = [types.UpdateChannel(channel_id=channel.id)]
    if channel.megagroup:
        _, event = channel.add_message(me.id, "", action="delete_user", action_users=[me.id])
        ops.push_channel_event(api, channel, event)
    ops.push_account(
        api,
        me,
        [types.UpdateChannel(channel_id=channel.id)],
        chats=[ops.tl_channel(channel, me.id)],
        skip_session=ctx.session_id,
    )
    return ops.channel_updates(api, channel, updates, me, ())


@_method(functions.channels.GetChannelsRequest)
def _get_channels(api: Api, request: Any, ctx: CallContext) -> messages_t.Chats:
    me = api.me(ctx)
    found: list[Any] = []
    for input_channel in request.id:
        channel = ops.channel_of(api, input_channel, me, member=False)
        found.append(ops.tl_channel(channel, me.id))
    return messages_t.Chats(chats=found)


@_method(functions.channels.GetFullChannelRequest)
def _get_full_channel(api: Api, request: Any, ctx: CallContext) -> messages_t.ChatFull:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    member = channel.members.get(me.id)
    full = types.ChannelFull(
        id=channel.id,
        about="",
        read_inbox_max_id=member.read_inbox_max_id if member else 0,
        read_outbox_max_id=channel.read_outbox_max_id(me.id),
        unread_count=channel.unread_count(me.id) if member else 0,
        chat_photo=types.PhotoEmpty(id=0),
        notify_settings=types.PeerNotifySettings(),
        bot_info=[],
        pts=channel.pts,
        can_view_participants=True,
        participants_count=len(channel.members),
        admins_count=1,
    )
    return messages_t.ChatFull(
        full_chat=full,
        chats=[ops.tl_channel(channel, me.id)],
        users=ops.users(api, [channel.creator_id, me.id], me),
    )


def _participant(channel: Channel, member: Member, viewer_id: int) -> Any:
    if member.user_id == channel.creator_id:
        return types.ChannelParticipantCreator(
            user_id=member.user_id, admin_rights=ops._ADMIN_RIGHTS
        )
    if member.user_id == viewer_id:
        return types.ChannelParticipantSelf(
            user_id=member.user_id, inviter_id=member.inviter_id, date=ops.date(member.date)
        )
    return types.ChannelParticipant(user_id=member.user_id, date=ops.date(member.date))


@_method(functions.channels.GetParticipantsRequest)
def _get_participants(api: Api, request: Any, ctx: CallContext) -> Any:
    """Members in join order; a search filter matches first names and usernames. Other
    filters (admins, kicked, bots...) are not modelled and list every member."""
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    if not channel.megagroup and me.id != channel.creator_id:
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    members = list(channel.members.values())
    query = getattr(request.filter, "q", "") or ""
    if query:
        wanted = query.lower()
        members = [
            m
            for m in members
            if (a := api.world.accounts.get(m.user_id)) is not None
            and (wanted in a.first_name.lower() or wanted in (a.username or "").lower())
        ]
    page = members[max(0, request.offset) : max(0, request.offset) + max(0, request.limit)]
    return channels_t.ChannelParticipants(
        count=len(members),
        participants=[_participant(channel, m, me.id) for m in page],
        chats=[],
        users=ops.users(api, [m.user_id for m in page], me),
    )


def resolve_channel_username(api: Api, username: str, me: Account) -> contacts_t.ResolvedPeer:
    """contacts.resolveUsername for a public channel (users are resolved in `._api`)."""
    channel = api.world.chats.channel_by_username(username)
    if channel is None:
        raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
    return contacts_t.ResolvedPeer(
        peer=types.PeerChannel(channel.id), chats=[ops.tl_channel(channel, me.id)], users=[]
    )


# updates.getChannelDifference ----------------------------------------------------------


@_method(functions.updates.GetChannelDifferenceRequest)
def _get_channel_difference(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    channel = ops.channel_of(api, request.channel, me)
    if request.pts <= 0:
        raise RpcFailure(400, "PERSISTENT_TIMESTAMP_EMPTY")
    if request.pts > channel.pts:
        raise RpcFailure(400, "PERSISTENT_TIMESTAMP_INVALID")
    # Whatever the answer, it brings this key up to the channel's pts.
    api.world.chats.confirmed[(ctx.record.key_id, channel.id)] = channel.pts
    if request.pts == channel.pts:
        return updates_t.ChannelDifferenceEmpty(pts=channel.pts, final=True)
    window = max(1, min(request.limit or 100, api._server.channel_difference_limit))
    if channel.pts - request.pts > window:
        return _too_long(api, channel, me, window)
    # The gap fits the window, so one answer carries all of it (final).
    batch = [e for e in channel.events if e.pts > request.pts]
    new_ids = [e.message_ids[0] for e in batch if e.kind == "new"]
    new_messages = [channel.messages[i] for i in new_ids if i in channel.messages]
    other_updates: list[Any] = []
    for event in batch:
        if event.kind == "new" or (event.kind == "edit" and event.message_ids[0] in new_ids):
            continue  # new_messages carry the current text already
        update = ops.channel_update(api, channel, event, me.id)
        if update is not None:
            other_updates.append(update)
    edited = [
        channel.messages[e.message_ids[0]]
        for e in batch
        if e.kind == "edit" and e.message_ids[0] in channel.messages
    ]
    return updates_t.ChannelDifference(
        pts=batch[-1].pts,
        new_messages=[ops.tl_channel_message(api, channel, m, me.id) for m in new_messages],
        other_updates=other_updates,
        chats=[ops.tl_channel(channel, me.id)],
        users=ops.users(api, ops.channel_user_ids(channel, new_messages + edited), me),
        final=True,
    )


def _too_long(
    api: Api, channel: Channel, me: Account, window: int
) -> updates_t.ChannelDifferenceTooLong:
    member = channel.members.get(me.id)
    count = min(window, TOO_LONG_MESSAGES)
    latest = sorted(channel.messages.values(), key=lambda m: m.id)[-count:]
    dialog = types.Dialog(
        peer=types.PeerChannel(channel.id),
        top_message=channel.top_message_id(),
        read_inbox_max_id=member.read_inbox_max_id if member else 0,
        read_outbox_max_id=channel.read_outbox_max_id(me.id),
        unread_count=channel.unread_count(me.id) if member else 0,
        unread_mentions_count=0,
        unread_reactions_count=0,
        unread_poll_votes_count=0,
        notify_settings=types.PeerNotifySettings(),
        pts=channel.pts,
    )
    return updates_t.ChannelDifferenceTooLong(
        dialog=dialog,
        messages=[ops.tl_channel_message(api, channel, m, me.id) for m in reversed(latest)],
        chats=[ops.tl_channel(channel, me.id)],
        users=ops.users(api, ops.channel_user_ids(channel, latest), me),
        final=True,
    )


# Basic groups --------------------------------------------------------------------------


def _group_answer(api: Api, group_id: int, me: Account, copy: Any) -> types.Updates:
    group = api.world.chats.groups[group_id]
    update = types.UpdateNewMessage(
        message=ops.tl_box_message(api, copy), pts=copy.pts, pts_count=1
    )
    return types.Updates(
        updates=[update],
        users=ops.users(api, [*group.members, me.id], me),
        chats=[ops.tl_group(group, me.id)],
        date=ops.now(),
        seq=0,
    )


@_method(functions.messages.CreateChatRequest)
def _create_chat(api: Api, request: Any, ctx: CallContext) -> messages_t.InvitedUsers:
    me = api.me(ctx)
    if not request.title or not request.title.strip():
        raise RpcFailure(400, "CHAT_TITLE_EMPTY")
    members: list[int] = []
    for input_user in request.users:
        try:
            account = api.resolve_peer(input_user, me)
        except RpcFailure:
            raise RpcFailure(400, "USER_ID_INVALID") from None
        if account.id != me.id and account.id not in members:
            members.append(account.id)
    if not members:
        raise RpcFailure(400, "USERS_TOO_FEW")
    group = api.world.chats.new_group(me.id, request.title, members)
    copies = ops.group_send(
        api,
        group,
        me,
        "",
        action="create",
        action_users=[me.id, *members],
        skip_session=ctx.session_id,
    )
    return _invited(_group_answer(api, group.id, me, copies[me.id]))


@_method(functions.messages.AddChatUserRequest)
def _add_chat_user(api: Api, request: Any, ctx: CallContext) -> messages_t.InvitedUsers:
    me = api.me(ctx)
    group = ops.group_of(api, request.chat_id, me)
    try:
        account = api.resolve_peer(request.user_id, me)
    except RpcFailure:
        raise RpcFailure(400, "USER_ID_INVALID") from None
    if account.id in group.members:
        raise RpcFailure(400, "USER_ALREADY_PARTICIPANT")
    group.members[account.id] = Member(
        user_id=account.id, date=int(ops.now().timestamp()), inviter_id=me.id
    )
    group.version += 1
    copies = ops.group_send(
        api,
        group,
        me,
        "",
        action="add_user",
        action_users=[account.id],
        skip_session=ctx.session_id,
    )
    return _invited(_group_answer(api, group.id, me, copies[me.id]))


@_method(functions.messages.DeleteChatUserRequest)
def _delete_chat_user(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    """Leave a basic group (yourself) or remove someone (its creator, or who added them).
    Everyone, the removed member included, gets the service message."""
    me = api.me(ctx)
    group = ops.group_of(api, request.chat_id, me)
    try:
        account = api.resolve_peer(request.user_id, me)
    except RpcFailure:
        raise RpcFailure(400, "USER_ID_INVALID") from None
    member = group.members.get(account.id)
    if member is None:
        raise RpcFailure(400, "USER_NOT_PARTICIPANT")
    if account.id != me.id and me.id not in (group.creator_id, member.inviter_id):
        raise RpcFailure(400, "CHAT_ADMIN_REQUIRED")
    copies = ops.group_send(
        api,
        group,
        me,
        "",
        action="delete_user",
        action_users=[account.id],
        skip_session=ctx.session_id,
    )
    del group.members[account.id]
    group.version += 1
    api._server._on_world_changed()
    return _group_answer(api, group.id, me, copies[me.id])


@_method(functions.messages.GetChatsRequest)
def _get_chats(api: Api, request: Any, ctx: CallContext) -> messages_t.Chats:
    me = api.me(ctx)
    groups = api.world.chats.groups
    return messages_t.Chats(
        chats=[ops.tl_group(groups[i], me.id) for i in request.id if i in groups]
    )


@_method(functions.messages.GetFullChatRequest)
def _get_full_chat(api: Api, request: Any, ctx: CallContext) -> messages_t.ChatFull:
    me = api.me(ctx)
    group = ops.group_of(api, request.chat_id, me)
    participants: list[Any] = [
        types.ChatParticipantCreator(user_id=m.user_id)
        if m.user_id == group.creator_id
        else types.ChatParticipant(
            user_id=m.user_id, inviter_id=m.inviter_id, date=ops.date(m.date)
        )
        for m in group.members.values()
    ]
    full = types.ChatFull(
        id=group.id,
        about="",
        participants=types.ChatParticipants(
            chat_id=group.id, participants=participants, version=group.version
        ),
        notify_settings=types.PeerNotifySettings(),
    )
    return messages_t.ChatFull(
        full_chat=full,
        chats=[ops.tl_group(group, me.id)],
        users=ops.users(api, group.members, me),
    )
