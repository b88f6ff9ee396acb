"""Channels, supergroups and basic groups as the test server keeps them.

A channel (broadcast or megagroup) has its own pts and message log, as on Telegram:
every new message, edit or delete is one `ChannelEvent` that moves the channel's pts,
and updates.getChannelDifference answers from that log. A basic group has no log of
its own: its messages live in each member's box (``StoredMessage.peer_type ==
"chat"``) and move each member's account pts, like private messages.

Account pts steps that are not new messages (edits, deletes, reads) are kept per
account in `Chats.account_log`, next to ``Account.box``, for updates.getDifference.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import attrs

FIRST_CHANNEL_ID = 1_700_000_001
FIRST_GROUP_ID = 900_000_001


@attrs.define(eq=False)
class ChannelMessage:
    """A message in a channel; ``action`` names a service message ("create", "add_user",
    "delete_user") whose users are ``action_users``."""

    id: int
    date: int
    from_id: int
    text: str
    action: str | None = None
    action_users: list[int] = attrs.field(factory=list)
    edit_date: int | None = None
    # The file attached to this message (a key of the server's file store), if any.
    media_id: int | None = None


@attrs.define(eq=False)
class ChannelEvent:
    """One step of a channel's pts: ``kind`` is "new", "edit" or "delete"."""

    pts: int
    pts_count: int
    kind: str
    message_ids: list[int]
    date: int


@attrs.define(eq=False)
class Member:
    """A member of a channel or a basic group, with what they have read."""

    user_id: int
    date: int
    inviter_id: int
    read_inbox_max_id: int = 0


@attrs.define(eq=False)
class Channel:
    """A broadcast channel (``megagroup`` False) or a supergroup."""

    id: int
    access_hash: int
    title: str
    megagroup: bool
    creator_id: int
    date: int
    username: str | None = None
    pts: int = 1
    next_message_id: int = 1
    messages: dict[int, ChannelMessage] = attrs.field(factory=dict)
    events: list[ChannelEvent] = attrs.field(factory=list)
    members: dict[int, Member] = attrs.field(factory=dict)
    # random_id -> message id, so a resent sendMessage never makes a second message.
    random_ids: dict[int, int] = attrs.field(factory=dict)

    def add_message(
        self,
        from_id: int,
        text: str,
        *,
        action: str | None = None,
        action_users: list[int] | None = None,
        media_id: int | None = None,
    ) -> tuple[ChannelMessage, ChannelEvent]:
        now = int(time.time())
        message = ChannelMessage(
            id=self.next_message_id,
            date=now,
            from_id=from_id,
            text=text,
            action=action,
            action_users=list(action_users or ()),
            media_id=media_id,
        )
        self.next_message_id += 1
        self.messages[message.id] = message
        return message, self._event("new", [message.id], 1, now)

    def edit_message(self, message_id: int, text: str) -> tuple[ChannelMessage, ChannelEvent]:
        message = self.messages[message_id]
        now = int(time.time())
        message.text = text
        message.edit_date = now
        return message, self._event("edit", [message_id], 1, now)

    def delete_messages(self, message_ids: list[int]) -> ChannelEvent | None:
        gone = [i for i in dict.fromkeys(message_ids) if self.messages.pop(i, None) is not None]
        if not gone:
            return None
        return self._event("delete", gone, len(gone), int(time.time()))

    def _event(self, kind: str, ids: list[int], count: int, now: int) -> ChannelEvent:
        self.pts += count
        event = ChannelEvent(pts=self.pts, pts_count=count, kind=kind, message_ids=ids, date=now)
        self.events.append(event)
        return event

    def top_message_id(self) -> int:
        return max(self.messages, default=0)

    def read_outbox_max_id(self, viewer_id: int) -> int:
        """The newest message someone other than the viewer has read."""
        return max(
            (m.read_inbox_max_id for m in self.members.values() if m.user_id != viewer_id),
            default=0,
        )

    def unread_count(self, viewer_id: int) -> int:
        member = self.members.get(viewer_id)
        seen = member.read_inbox_max_id if member is not None else 0
        return sum(1 for m in self.messages.values() if m.id > seen and m.from_id != viewer_id)


@attrs.define(eq=False)
class BasicGroup:
    """A basic group: members and a version; its messages are in the members' boxes."""

    id: int
    title: str
    creator_id: int
    date: int
    members: dict[int, Member] = attrs.field(factory=dict)
    version: int = 1


@attrs.define(eq=False)
class AccountEvent:
    """An account pts step that is not a new message.

    ``kind`` is "edit" (``message_ids`` = [id]), "delete" (the ids), "read_inbox" or
    "read_outbox" (``max_id`` in the dialog with ``peer_type``/``peer_id``).
    """

    pts: int
    pts_count: int
    kind: str
    date: int
    message_ids: list[int] = attrs.field(factory=list)
    peer_type: str = "user"
    peer_id: int = 0
    max_id: int = 0


@attrs.define(eq=False)
class Chats:
    """Every channel and basic group, plus the account pts steps besides new messages."""

    channels: dict[int, Channel] = attrs.field(factory=dict)
    groups: dict[int, BasicGroup] = attrs.field(factory=dict)
    account_log: dict[int, list[AccountEvent]] = attrs.field(factory=dict)
    # (user id, peer type, peer id) -> [read_inbox_max_id, read_outbox_max_id]
    reads: dict[tuple[int, str, int], list[int]] = attrs.field(factory=dict)
    next_channel_id: int = FIRST_CHANNEL_ID
    next_group_id: int = FIRST_GROUP_ID

    def new_channel(
        self, creator_id: int, title: str, *, megagroup: bool, username: str | None = None
    ) -> Channel:
        if not title.strip():
            raise ValueError("a channel needs a title")
        if username is not None and self.channel_by_username(username) is not None:
            raise ValueError(f"the username {username!r} is taken")
        now = int(time.time())
        channel = Channel(
            id=self.next_channel_id,
            access_hash=secrets.randbits(63),
            title=title,
            megagroup=megagroup,
            creator_id=creator_id,
            date=now,
            username=username,
        )
        channel.members[creator_id] = Member(user_id=creator_id, date=now, inviter_id=creator_id)
        self.next_channel_id += 1
        self.channels[channel.id] = channel
        return channel

    def new_group(self, creator_id: int, title: str, member_ids: list[int]) -> BasicGroup:
        if not title.strip():
            raise ValueError("a group needs a title")
        now = int(time.time())
        group = BasicGroup(id=self.next_group_id, title=title, creator_id=creator_id, date=now)
        for user_id in [creator_id, *member_ids]:
            group.members.setdefault(
                user_id, Member(user_id=user_id, date=now, inviter_id=creator_id)
            )
        self.next_group_id += 1
        self.groups[group.id] = group
        return group

    def channel_by_username(self, username: str) -> Channel | None:
        wanted = username.lower().lstrip("@")
        return next(
            (c for c in self.channels.values() if c.username and c.username.lower() == wanted),
            None,
        )

    def log_for(self, user_id: int) -> list[AccountEvent]:
        return self.account_log.setdefault(user_id, [])

    def read_state(self, user_id: int, peer_type: str, peer_id: int) -> list[int]:
        """[read_inbox_max_id, read_outbox_max_id] of one account's dialog (mutable)."""
        return self.reads.setdefault((user_id, peer_type, peer_id), [0, 0])

    # Persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "next_channel_id": self.next_channel_id,
            "next_group_id": self.next_group_id,
            "channels": [_channel_to_json(c) for c in self.channels.values()],
            "groups": [
                {
                    **{k: v for k, v in attrs.asdict(g).items() if k != "members"},
                    "members": [attrs.asdict(m) for m in g.members.values()],
                }
                for g in self.groups.values()
            ],
            "account_log": [
                {"user_id": uid, "events": [attrs.asdict(e) for e in events]}
                for uid, events in self.account_log.items()
            ],
            "reads": [[u, t, p, *marks] for (u, t, p), marks in self.reads.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chats:
        """Read what `to_json` wrote; an empty dict (older state files) is no chats."""
        chats = cls(
            next_channel_id=int(data.get("next_channel_id", FIRST_CHANNEL_ID)),
            next_group_id=int(data.get("next_group_id", FIRST_GROUP_ID)),
        )
        for raw in data.get("channels", []):
            channel = _channel_from_json(raw)
            chats.channels[channel.id] = channel
        for raw in data.get("groups", []):
            members = [Member(**m) for m in raw["members"]]
            group = BasicGroup(**{k: v for k, v in raw.items() if k != "members"})
            group.members = {m.user_id: m for m in members}
            chats.groups[group.id] = group
        for raw in data.get("account_log", []):
            chats.account_log[int(raw["user_id"])] = [AccountEvent(**e) for e in raw["events"]]
        for u, t, p, inbox, outbox in data.get("reads", []):
            chats.reads[(int(u), str(t), int(p))] = [int(inbox), int(outbox)]
        return chats


def _channel_to_json(c: Channel) -> dict[str, Any]:
    return {
        "id": c.id,
        "access_hash": c.access_hash,
        "title": c.title,
        "megagroup": c.megagroup,
        "creator_id": c.creator_id,
        "date": c.date,
        "username": c.username,
        "pts": c.pts,
        "next_message_id": c.next_message_id,
        "messages": [attrs.asdict(m) for m in c.messages.values()],
        "events": [attrs.asdict(e) for e in c.events],
        "members": [attrs.asdict(m) for m in c.members.values()],
        "random_ids": [[r, i] for r, i in c.random_ids.items()],
    }


def _channel_from_json(raw: dict[str, Any]) -> Channel:
    channel = Channel(
        id=int(raw["id"]),
        access_hash=int(raw["access_hash"]),
        title=str(raw["title"]),
        megagroup=bool(raw["megagroup"]),
        creator_id=int(raw["creator_id"]),
        date=int(raw["date"]),
        username=raw["username"],
        pts=int(raw["pts"]),
        next_message_id=int(raw["next_message_id"]),
    )
    for m in raw["messages"]:
        message = ChannelMessage(**m)
        channel.messages[message.id] = message
    channel.events = [ChannelEvent(**e) for e in raw["events"]]
    for m in raw["members"]:
        member = Member(**m)
        channel.members[member.user_id] = member
    channel.random_ids = {int(r): int(i) for r, i in raw["random_ids"]}
    return channel
