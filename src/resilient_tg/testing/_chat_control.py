"""Control calls of `MTProtoTestServer` for channels, supergroups and basic groups.

A mixin, so that the server's own module stays about links and MTProto; everything
here changes the world the way the matching API call would and pushes the same
updates to the members' live sessions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio.lowlevel
import attrs
from telethon.tl import types

from . import _chat_ops as ops
from ._api_messages import delete_box_messages, edit_box_message
from ._chats import BasicGroup, Channel, Member

if TYPE_CHECKING:
    from ._api_base import Api
    from ._world import Account, World

# Telegram's rule for public usernames: 5-32 characters, letters, digits and
# underscores, starting with a letter.
_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{4,31}")
# The most pts one getChannelDifference answer spans; a larger gap gets
# channelDifferenceTooLong (the request's own limit applies when it is smaller).
CHANNEL_DIFFERENCE_LIMIT = 500


@attrs.frozen
class TestChannel:
    """A channel or supergroup made with `MTProtoTestServer.create_channel`.

    ``peer`` is an InputPeerChannel that a logged-in member's Telethon client accepts
    wherever it takes an entity.
    """

    __test__ = False  # not a pytest test class, despite the name

    id: int
    access_hash: int
    title: str
    megagroup: bool
    creator_id: int
    username: str | None

    @property
    def peer(self) -> types.InputPeerChannel:
        return types.InputPeerChannel(channel_id=self.id, access_hash=self.access_hash)


@attrs.frozen
class TestGroup:
    """A basic group made with `MTProtoTestServer.create_group`."""

    __test__ = False  # not a pytest test class, despite the name

    id: int
    title: str
    creator_id: int

    @property
    def peer(self) -> types.InputPeerChat:
        return types.InputPeerChat(chat_id=self.id)


def _test_channel(channel: Channel) -> TestChannel:
    return TestChannel(
        id=channel.id,
        access_hash=channel.access_hash,
        title=channel.title,
        megagroup=channel.megagroup,
        creator_id=channel.creator_id,
        username=channel.username,
    )


class ChatControl:
    """Channel and group control calls (mixed into `MTProtoTestServer`)."""

    _world: World
    _api: Api
    #: A getChannelDifference whose gap (channel pts minus the client's) is larger
    #: than this, or than the request's ``limit`` (Telethon: 100 for users), is
    #: answered with channelDifferenceTooLong, as Telegram does. Lower it on a server
    #: to test how a client copes with long absences without posting hundreds.
    channel_difference_limit: int = CHANNEL_DIFFERENCE_LIMIT
    #: A getDifference whose gap (account pts minus the client's) is larger than this,
    #: or than the request's ``pts_total_limit``, is answered with differenceTooLong
    #: (None: only pts_total_limit applies; Telethon sends none). Set it to test how a
    #: client copes with an account gap the server will not replay.
    difference_limit: int | None = None

    def _account(self, user_id: int) -> Account:
        raise NotImplementedError  # the server's own

    def create_channel(
        self,
        owner_id: int,
        title: str,
        *,
        megagroup: bool = True,
        members: Iterable[int] = (),
        username: str | None = None,
    ) -> TestChannel:
        """Create a supergroup (or a broadcast channel with ``megagroup=False``) owned by
        ``owner_id`` with ``members``; their live sessions get the updates a real
        channels.createChannel and inviteToChannel would send. ``username`` makes it
        public (Telegram's rules: 5-32 letters, digits, underscores, a letter first)."""
        owner = self._account(owner_id)
        joiners = [self._account(m) for m in dict.fromkeys(members) if m != owner_id]
        if username is not None:
            if not _USERNAME.fullmatch(username):
                raise ValueError(f"{username!r} is not a valid Telegram username")
            if self._world.by_username(username) is not None:
                raise ValueError(f"the username {username!r} is taken")
        channel = self._world.chats.new_channel(
            owner.id, title, megagroup=megagroup, username=username
        )
        _, event = channel.add_message(owner.id, "", action="create")
        ops.push_channel_event(self._api, channel, event)
        self._add_channel_members(channel, owner, joiners)
        return _test_channel(channel)

    def _add_channel_members(
        self, channel: Channel, inviter: Account, joiners: list[Account]
    ) -> None:
        joiners = [a for a in joiners if a.id not in channel.members]
        if not joiners:
            return
        when = int(ops.now().timestamp())
        for account in joiners:
            channel.members[account.id] = Member(
                user_id=account.id, date=when, inviter_id=inviter.id
            )
        if channel.megagroup:
            _, event = channel.add_message(
                inviter.id, "", action="add_user", action_users=[a.id for a in joiners]
            )
            ops.push_channel_event(self._api, channel, event)
        else:
            for account in joiners:
                ops.push_account(
                    self._api,
                    account,
                    [types.UpdateChannel(channel_id=channel.id)],
                    chats=[ops.tl_channel(channel, account.id)],
                )
        self._api._server._on_world_changed()

    def add_members(self, chat_id: int, user_ids: Iterable[int]) -> None:
        """Add accounts to a channel, supergroup or basic group, as its creator would."""
        channel = self._world.chats.channels.get(chat_id)
        if channel is not None:
            joiners = [self._account(u) for u in user_ids]
            self._add_channel_members(channel, self._account(channel.creator_id), joiners)
            return
        group = self._group(chat_id)
        creator = self._account(group.creator_id)
        new = [self._account(u) for u in dict.fromkeys(user_ids) if u not in group.members]
        if not new:
            return
        when = int(ops.now().timestamp())
        for account in new:
            group.members[account.id] = Member(user_id=account.id, date=when, inviter_id=creator.id)
        group.version += 1
        ops.group_send(
            self._api, group, creator, "", action="add_user", action_users=[a.id for a in new]
        )

    def remove_members(self, chat_id: int, user_ids: Iterable[int]) -> None:
        """Remove accounts from a channel, supergroup or basic group, as its creator
        would (kicked): a supergroup or basic group gets a service message; the removed
        get updateChannel, and getChannelDifference answers them CHANNEL_PRIVATE."""
        channel = self._world.chats.channels.get(chat_id)
        if channel is None:
            group = self._group(chat_id)
            creator = self._account(group.creator_id)
            for user_id in dict.fromkeys(user_ids):
                if user_id in group.members and user_id != group.creator_id:
                    ops.group_send(
                        self._api, group, creator, "", action="delete_user", action_users=[user_id]
                    )
                    del group.members[user_id]
                    group.version += 1
            self._api._server._on_world_changed()
            return
        gone = [
            self._account(u)
            for u in dict.fromkeys(user_ids)
            if u in channel.members and u != channel.creator_id
        ]
        for account in gone:
            del channel.members[account.id]
            if channel.megagroup:
                _, event = channel.add_message(
                    channel.creator_id, "", action="delete_user", action_users=[account.id]
                )
                ops.push_channel_event(self._api, channel, event)
            ops.push_account(
                self._api,
                account,
                [types.UpdateChannel(channel_id=channel.id)],
                chats=[ops.tl_channel(channel, account.id)],
            )
        self._api._server._on_world_changed()

    def channel_pts(self, channel_id: int) -> int:
        """The channel's pts now (every new message, edit and delete moves it)."""
        return self._channel(channel_id).pts

    def create_group(self, owner_id: int, title: str, members: Iterable[int]) -> TestGroup:
        """Create a basic group, as messages.createChat does (a service message in every
        member's box, pushed to their live sessions)."""
        owner = self._account(owner_id)
        member_ids = [self._account(m).id for m in dict.fromkeys(members) if m != owner_id]
        if not member_ids:
            raise ValueError("a basic group needs at least one member besides its owner")
        group = self._world.chats.new_group(owner.id, title, member_ids)
        ops.group_send(
            self._api, group, owner, "", action="create", action_users=[owner.id, *member_ids]
        )
        return TestGroup(id=group.id, title=group.title, creator_id=owner.id)

    async def post(self, chat_id: int, from_id: int, text: str) -> int:
        """Send ``text`` as ``from_id`` to a channel/supergroup or a basic group; members'
        live sessions get the updates. Returns the message id: the channel's, or in a
        basic group the id in the sender's box."""
        if not text:
            raise ValueError("text must not be empty")
        sender = self._account(from_id)
        channel = self._world.chats.channels.get(chat_id)
        if channel is not None:
            if from_id not in channel.members:
                raise ValueError(f"account {from_id} is not a member of channel {chat_id}")
            message, _ = ops.post(self._api, channel, sender, text)
            await anyio.lowlevel.checkpoint()
            return message.id
        group = self._group(chat_id)
        if from_id not in group.members:
            raise ValueError(f"account {from_id} is not a member of group {chat_id}")
        copies = ops.group_send(self._api, group, sender, text)
        await anyio.lowlevel.checkpoint()
        return copies[from_id].id

    async def edit_message(self, where: int, message_id: int, text: str) -> None:
        """Edit a message. ``where`` is a channel id (``message_id`` is the channel's) or
        an account id (``message_id`` in that account's box; every copy of the private
        or basic-group message changes). Members get updateEdit(Channel)Message."""
        if not text:
            raise ValueError("text must not be empty")
        channel = self._world.chats.channels.get(where)
        if channel is not None:
            if message_id not in channel.messages:
                raise LookupError(f"no message {message_id} in channel {where}")
            _, event = channel.edit_message(message_id, text)
            ops.push_channel_event(self._api, channel, event)
        else:
            owner = self._account(where)
            message = next((m for m in owner.box if m.id == message_id), None)
            if message is None:
                raise LookupError(f"no message {message_id} in the box of account {where}")
            edit_box_message(self._api, owner, message, text, None)
        self._api._server._on_world_changed()
        await anyio.lowlevel.checkpoint()

    async def delete_messages(
        self, where: int, message_ids: Iterable[int], *, revoke: bool = True
    ) -> None:
        """Delete messages: ``where`` as for `edit_message`; ``revoke`` deletes every copy
        of a private or basic-group message (False: only the account's own)."""
        ids = list(message_ids)
        channel = self._world.chats.channels.get(where)
        if channel is not None:
            event = channel.delete_messages(ids)
            if event is not None:
                ops.push_channel_event(self._api, channel, event)
        else:
            delete_box_messages(
                self._api, self._account(where), ids, revoke=revoke, skip_session=None
            )
        self._api._server._on_world_changed()
        await anyio.lowlevel.checkpoint()

    def _channel(self, channel_id: int) -> Channel:
        channel = self._world.chats.channels.get(channel_id)
        if channel is None:
            raise LookupError(f"no channel with id {channel_id}")
        return channel

    def _group(self, group_id: int) -> BasicGroup:
        group = self._world.chats.groups.get(group_id)
        if group is None:
            raise LookupError(f"no channel or basic group with id {group_id}")
        return group
