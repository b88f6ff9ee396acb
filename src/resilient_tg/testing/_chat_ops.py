"""What chats look like on the wire and how their changes reach members.

Shared by the API handlers (`._api_chats`, `._api_messages`) and the server's control
calls (`._chat_control`): resolving input peers, building Channel/Chat/Message TL
objects for one viewer, storing messages in channels and basic groups, and pushing
the resulting updates to every live session of every member.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
from telethon.tl import types

from ._api_base import RpcFailure
from ._chats import AccountEvent, BasicGroup, Channel, ChannelEvent, ChannelMessage
from ._world import Account, StoredMessage

if TYPE_CHECKING:
    from ._api_base import Api

_ADMIN_RIGHTS = types.ChatAdminRights(
    change_info=True,
    post_messages=True,
    edit_messages=True,
    delete_messages=True,
    ban_users=True,
    invite_users=True,
    pin_messages=True,
    add_admins=True,
    manage_call=True,
    other=True,
)


def date(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


def now() -> dt.datetime:
    return dt.datetime.now(tz=dt.timezone.utc)


@attrs.define(eq=False)
class Target:
    """A resolved peer: exactly one of ``account``, ``group``, ``channel`` is set."""

    account: Account | None = None
    group: BasicGroup | None = None
    channel: Channel | None = None

    @property
    def peer_type(self) -> str:
        return "channel" if self.channel else "chat" if self.group else "user"

    @property
    def peer_id(self) -> int:
        thing = self.channel or self.group or self.account
        assert thing is not None
        return thing.id


# Resolving ---------------------------------------------------------------------------


def channel_of(api: Api, peer: Any, me: Account, *, member: bool = True) -> Channel:
    """The channel an InputChannel/InputPeerChannel names; CHANNEL_INVALID if the
    access hash is wrong, CHANNEL_PRIVATE for a non-member of a private channel."""
    if not isinstance(peer, (types.InputChannel, types.InputPeerChannel)):
        raise RpcFailure(400, "CHANNEL_INVALID")
    channel = api.world.chats.channels.get(peer.channel_id)
    if channel is None or channel.access_hash != peer.access_hash:
        raise RpcFailure(400, "CHANNEL_INVALID")
    if member and me.id not in channel.members and channel.username is None:
        raise RpcFailure(400, "CHANNEL_PRIVATE")
    return channel


def group_of(api: Api, chat_id: int, me: Account) -> BasicGroup:
    group = api.world.chats.groups.get(chat_id)
    if group is None:
        raise RpcFailure(400, "CHAT_ID_INVALID")
    if me.id not in group.members:
        raise RpcFailure(403, "CHAT_WRITE_FORBIDDEN")
    return group


def resolve(api: Api, peer: Any, me: Account) -> Target:
    if isinstance(peer, (types.InputPeerChannel, types.InputChannel)):
        return Target(channel=channel_of(api, peer, me))
    if isinstance(peer, types.InputPeerChat):
        group = api.world.chats.groups.get(peer.chat_id)
        if group is None:
            raise RpcFailure(400, "PEER_ID_INVALID")
        if me.id not in group.members:
            raise RpcFailure(400, "CHAT_ID_INVALID")
        return Target(group=group)
    return Target(account=api.resolve_peer(peer, me))


# Views --------------------------------------------------------------------------------


def tl_channel(channel: Channel, viewer_id: int) -> types.Channel:
    creator = viewer_id == channel.creator_id
    return types.Channel(
        id=channel.id,
        title=channel.title,
        photo=types.ChatPhotoEmpty(),
        date=date(channel.date),
        creator=creator or None,
        left=viewer_id not in channel.members or None,
        broadcast=not channel.megagroup or None,
        megagroup=channel.megagroup or None,
        access_hash=channel.access_hash,
        username=channel.username,
        admin_rights=_ADMIN_RIGHTS if creator else None,
        participants_count=len(channel.members),
    )


def tl_group(group: BasicGroup, viewer_id: int) -> types.Chat | types.ChatForbidden:
    if viewer_id not in group.members:
        return types.ChatForbidden(id=group.id, title=group.title)
    return types.Chat(
        id=group.id,
        title=group.title,
        photo=types.ChatPhotoEmpty(),
        participants_count=len(group.members),
        date=date(group.date),
        version=group.version,
        creator=viewer_id == group.creator_id or None,
    )


def _action(action: str | None, users: list[int], title: str, channel: bool) -> Any:
    if action == "create":
        if channel:
            return types.MessageActionChannelCreate(title=title)
        return types.MessageActionChatCreate(title=title, users=users)
    if action == "add_user":
        return types.MessageActionChatAddUser(users=users)
    if action == "delete_user":
        return types.MessageActionChatDeleteUser(user_id=users[0])
    return None


def tl_channel_message(
    api: Api, channel: Channel, message: ChannelMessage, viewer_id: int
) -> types.Message | types.MessageService:
    """A channel message as one member sees it: broadcast posts have no sender."""
    peer = types.PeerChannel(channel.id)
    sender = types.PeerUser(message.from_id) if channel.megagroup else None
    out = message.from_id == viewer_id or None
    if message.action is not None:
        return types.MessageService(
            id=message.id,
            peer_id=peer,
            date=date(message.date),
            action=_action(message.action, message.action_users, channel.title, True),
            out=out,
            post=not channel.megagroup or None,
            from_id=sender,
        )
    # Built through Api.tl_message so that attached files show as they do in private chats.
    tl = api.tl_message(
        StoredMessage(
            id=message.id,
            pts=0,
            date=message.date,
            peer_id=channel.id,
            from_id=message.from_id,
            out=bool(out),
            text=message.text,
            media_id=message.media_id,
        )
    )
    tl.peer_id = peer
    tl.from_id = sender
    tl.post = not channel.megagroup or None
    tl.edit_date = date(message.edit_date) if message.edit_date else None
    return tl


def tl_box_message(api: Api, message: StoredMessage) -> types.Message | types.MessageService:
    """A private or basic-group message from an account's box."""
    if message.peer_type == "chat":
        peer: Any = types.PeerChat(message.peer_id)
        if message.action is not None:
            group = api.world.chats.groups.get(message.peer_id)
            return types.MessageService(
                id=message.id,
                peer_id=peer,
                date=date(message.date),
                action=_action(
                    message.action, message.action_users, group.title if group else "", False
                ),
                out=message.out or None,
                from_id=types.PeerUser(message.from_id),
            )
    tl = api.tl_message(message)
    if message.peer_type == "chat":
        tl.peer_id = types.PeerChat(message.peer_id)
    tl.edit_date = date(message.edit_date) if message.edit_date else None
    return tl


def users(api: Api, ids: Iterable[int], viewer: Account | None) -> list[types.User]:
    accounts = api.world.accounts
    return [api.tl_user(accounts[i], viewer) for i in sorted(set(ids)) if i in accounts]


def box_peer(message: StoredMessage) -> Any:
    return (
        types.PeerChat(message.peer_id)
        if message.peer_type == "chat"
        else types.PeerUser(message.peer_id)
    )


def box_chats(api: Api, messages: Iterable[StoredMessage], viewer_id: int) -> list[Any]:
    ids = {m.peer_id for m in messages if m.peer_type == "chat"}
    groups = api.world.chats.groups
    return [tl_group(groups[i], viewer_id) for i in sorted(ids) if i in groups]


def box_user_ids(messages: Iterable[StoredMessage]) -> set[int]:
    found: set[int] = set()
    for m in messages:
        found.add(m.from_id)
        found.update(m.action_users)
        if m.peer_type == "user":
            found.add(m.peer_id)
    return found


# Channels: change and push ------------------------------------------------------------


def channel_update(api: Api, channel: Channel, event: ChannelEvent, viewer_id: int) -> Any | None:
    """The update one member gets for a channel event (None if its message is gone)."""
    if event.kind == "delete":
        return types.UpdateDeleteChannelMessages(
            channel_id=channel.id,
            messages=list(event.message_ids),
            pts=event.pts,
            pts_count=event.pts_count,
        )
    message = channel.messages.get(event.message_ids[0])
    if message is None:
        return None
    tl = tl_channel_message(api, channel, message, viewer_id)
    cls = types.UpdateNewChannelMessage if event.kind == "new" else types.UpdateEditChannelMessage
    return cls(message=tl, pts=event.pts, pts_count=event.pts_count)


def channel_user_ids(channel: Channel, messages: Iterable[ChannelMessage]) -> set[int]:
    found = {channel.creator_id}
    for m in messages:
        found.add(m.from_id)
        found.update(m.action_users)
    return found


def channel_updates(
    api: Api, channel: Channel, updates: list[Any], viewer: Account, user_ids: Iterable[int]
) -> types.Updates:
    return types.Updates(
        updates=updates,
        users=users(api, {*user_ids, viewer.id}, viewer),
        chats=[tl_channel(channel, viewer.id)],
        date=now(),
        seq=0,
    )


def push_channel_event(
    api: Api,
    channel: Channel,
    event: ChannelEvent,
    *,
    skip_session: int | None = None,
    also: Iterable[int] = (),
) -> None:
    """Send a channel event to every live session of every member (and of ``also``)."""
    server = api._server
    messages = [channel.messages[i] for i in event.message_ids if i in channel.messages]
    user_ids = channel_user_ids(channel, messages)
    for user_id in dict.fromkeys([*channel.members, *also]):
        viewer = api.world.accounts.get(user_id)
        sessions = [s for s in server._sessions_of(user_id) if s.session_id != skip_session]
        if viewer is None or not sessions:
            continue
        update = channel_update(api, channel, event, user_id)
        if update is None:
            continue
        body = bytes(channel_updates(api, channel, [update], viewer, user_ids))
        for session in sessions:
            server._send(session, body)


def post(
    api: Api,
    channel: Channel,
    sender: Account,
    text: str,
    *,
    random_id: int | None = None,
    skip_session: int | None = None,
) -> tuple[ChannelMessage, ChannelEvent]:
    """Store a message in a channel and push it to the members."""
    message, event = channel.add_message(sender.id, text)
    if random_id is not None:
        channel.random_ids[random_id] = message.id
    api._server._on_world_changed()
    push_channel_event(api, channel, event, skip_session=skip_session)
    return message, event


# Accounts: pts steps besides new messages ---------------------------------------------


def account_step(
    api: Api, account: Account, kind: str, count: int = 1, **fields: Any
) -> AccountEvent:
    """Move an account's pts for an edit, delete or read and log it for getDifference."""
    account.pts += count
    event = AccountEvent(
        pts=account.pts, pts_count=count, kind=kind, date=int(time.time()), **fields
    )
    api.world.chats.log_for(account.id).append(event)
    return event


def push_account(
    api: Api,
    account: Account,
    updates: list[Any],
    *,
    user_ids: Iterable[int] = (),
    chats: list[Any] | None = None,
    skip_session: int | None = None,
) -> None:
    server = api._server
    sessions = [s for s in server._sessions_of(account.id) if s.session_id != skip_session]
    if not sessions:
        return
    body = bytes(
        types.Updates(
            updates=updates,
            users=users(api, {*user_ids, account.id}, account),
            chats=chats or [],
            date=now(),
            seq=0,
        )
    )
    for session in sessions:
        server._send(session, body)


def append_box(
    account: Account,
    *,
    peer_type: str,
    peer_id: int,
    from_id: int,
    text: str,
    when: int,
    link: int,
    action: str | None = None,
    action_users: list[int] | None = None,
) -> StoredMessage:
    account.pts += 1
    message = StoredMessage(
        id=account.next_message_id,
        pts=account.pts,
        date=when,
        peer_id=peer_id,
        from_id=from_id,
        out=from_id == account.id,
        text=text,
        peer_type=peer_type,
        link=link,
        action=action,
        action_users=list(action_users or ()),
    )
    account.next_message_id += 1
    account.box.append(message)
    return message


def group_send(
    api: Api,
    group: BasicGroup,
    sender: Account,
    text: str,
    *,
    action: str | None = None,
    action_users: list[int] | None = None,
    skip_session: int | None = None,
    random_id: int | None = None,
) -> dict[int, StoredMessage]:
    """Store a basic-group message in every member's box and push updateNewMessage to
    each; returns the copies by member id."""
    when = int(time.time())
    link = secrets.randbits(62)
    if random_id is not None:
        sender.random_ids.add(random_id)
    copies: dict[int, StoredMessage] = {}
    for user_id in group.members:
        account = api.world.accounts.get(user_id)
        if account is None:
            continue
        copies[user_id] = append_box(
            account,
            peer_type="chat",
            peer_id=group.id,
            from_id=sender.id,
            text=text,
            when=when,
            link=link,
            action=action,
            action_users=action_users,
        )
    api._server._on_world_changed()
    for user_id, message in copies.items():
        account = api.world.accounts[user_id]
        update = types.UpdateNewMessage(
            message=tl_box_message(api, message), pts=message.pts, pts_count=1
        )
        push_account(
            api,
            account,
            [update],
            user_ids=box_user_ids([message]) | set(group.members),
            chats=[tl_group(group, user_id)],
            skip_session=skip_session if user_id == sender.id else None,
        )
    return copies


def copies_of(api: Api, link: int | None) -> dict[int, StoredMessage]:
    """Every account's copy of one private or basic-group message, by account id."""
    if link is None:
        return {}
    found: dict[int, StoredMessage] = {}
    for account in api.world.accounts.values():
        for message in account.box:
            if message.link == link:
                found[account.id] = message
    return found
