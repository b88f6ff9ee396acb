"""Channels and supergroups on MTProtoTestServer, against real unmodified Telethon:
per-channel pts, live updates, getChannelDifference (and TooLong), history, reads."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from telethon import errors, events
from telethon.tl import functions, types

from resilient_tg.testing import MTProtoTestServer, TestChannel

from .conftest import STEP_TIMEOUT, login, session_for, telethon_client, wait_until

pytestmark = pytest.mark.anyio


class Inbox:
    """NewMessage texts a client saw, counted, with a way to wait for one."""

    def __init__(self, client: Any) -> None:
        self.texts: Counter[str] = Counter()
        self.order: list[str] = []
        self.events: list[Any] = []
        self._changed = asyncio.Event()

        @client.on(events.NewMessage(incoming=True))
        async def on_message(event: Any) -> None:
            self.texts[event.raw_text] += 1
            self.order.append(event.raw_text)
            self.events.append(event)
            self._changed.set()

    async def until(self, text: str) -> None:
        async def wait() -> None:
            while not self.texts[text]:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), STEP_TIMEOUT)


def _users(server: MTProtoTestServer) -> tuple[Any, Any]:
    alice = server.create_user("+15550001", "Alice", username="alice")
    bob = server.create_user("+15550002", "Bob", username="bobby")
    return alice, bob


async def test_member_sees_each_supergroup_post_once(mtproto_server: MTProtoTestServer) -> None:
    alice, bob = _users(mtproto_server)
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        inbox = Inbox(b)
        created = await a(
            functions.channels.CreateChannelRequest(title="Team", about="", megagroup=True)
        )
        channel = created.chats[0]
        assert isinstance(channel, types.Channel)
        assert channel.megagroup
        assert channel.creator
        await a(
            functions.channels.InviteToChannelRequest(channel, [await a.get_input_entity("bobby")])
        )
        sent = await a.send_message(channel, "hello team")
        assert sent.text == "hello team"
        assert sent.out
        assert sent.peer_id == types.PeerChannel(channel.id)
        await inbox.until("hello team")
        event = inbox.events[-1]
        assert event.chat_id == -1000000000000 - channel.id
        assert event.sender_id == alice.id
        assert event.message.id == sent.id
        await mtproto_server.post(channel.id, alice.id, "from the server")
        await inbox.until("from the server")
        # Bob posts too; Alice's client sees it, Bob's own send is not an incoming event.
        a_inbox = Inbox(a)
        await b.send_message(channel.id, "bob here")
        await a_inbox.until("bob here")
        # A last post: anything sent twice would have arrived before it on the same link.
        await mtproto_server.post(channel.id, alice.id, "last")
        await inbox.until("last")
        assert inbox.order == ["hello team", "from the server", "last"]
        assert mtproto_server.channel_pts(channel.id) > 1
        history = await b.get_messages(channel.id, limit=10)
        assert [m.text for m in history if m.text] == [
            "last",
            "bob here",
            "from the server",
            "hello team",
        ]
        # The service messages are there too (created, Bob added).
        actions = [type(m.action) for m in history if m.action]
        assert actions == [types.MessageActionChatAddUser, types.MessageActionChannelCreate]


async def _away_posts(
    server: MTProtoTestServer, channel: TestChannel, sender_id: int, texts: list[str]
) -> None:
    for text in texts:
        await server.post(channel.id, sender_id, text)


async def test_away_member_catches_up_through_get_channel_difference(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    bob_session = session_for(mtproto_server)
    async with telethon_client(mtproto_server, session=bob_session, catch_up=True) as b:
        await login(b, mtproto_server, bob)
        inbox = Inbox(b)
        await mtproto_server.post(channel.id, alice.id, "while here")
        await inbox.until("while here")  # Bob's client now knows the channel's pts
    missed = [f"missed {i}" for i in range(7)]
    await _away_posts(mtproto_server, channel, alice.id, missed)
    mtproto_server.clear_requests()
    async with telethon_client(mtproto_server, session=bob_session, catch_up=True) as b:
        inbox = Inbox(b)
        await b.catch_up()
        await inbox.until(missed[-1])
        await mtproto_server.post(channel.id, alice.id, "after")
        await inbox.until("after")
        assert inbox.order == [*missed, "after"]
    assert mtproto_server.requests_for("updates.getChannelDifference")


async def test_gap_beyond_the_limit_gets_too_long_and_telethon_fetches_nothing(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    mtproto_server.channel_difference_limit = 5
    bob_session = session_for(mtproto_server)
    async with telethon_client(mtproto_server, session=bob_session, catch_up=True) as b:
        await login(b, mtproto_server, bob)
        inbox = Inbox(b)
        await mtproto_server.post(channel.id, alice.id, "while here")
        await inbox.until("while here")
        known = mtproto_server.channel_pts(channel.id)
    await _away_posts(mtproto_server, channel, alice.id, [f"gone {i}" for i in range(10)])
    mtproto_server.clear_requests()
    async with telethon_client(mtproto_server, session=bob_session, catch_up=True) as b:
        # What Telegram answers such a gap: the dialog and the latest messages.
        diff = await b(
            functions.updates.GetChannelDifferenceRequest(
                channel=channel.peer,
                filter=types.ChannelMessagesFilterEmpty(),
                pts=known,
                limit=100,
            )
        )
        assert isinstance(diff, types.updates.ChannelDifferenceTooLong)
        assert diff.final
        assert diff.dialog.pts == mtproto_server.channel_pts(channel.id)
        assert diff.messages[0].message == "gone 9"
        assert diff.dialog.top_message == diff.messages[0].id
        mtproto_server.clear_requests()
        inbox = Inbox(b)
        await b.catch_up()
        # TooLong, then the client asks again from the dialog's pts and gets Empty.
        await wait_until(
            lambda: len(mtproto_server.requests_for("updates.getChannelDifference")) >= 2
        )
        await mtproto_server.post(channel.id, alice.id, "after")
        await inbox.until("after")
        # Telethon dispatches none of the messages a TooLong skipped.
        assert inbox.order == ["after"]


async def test_too_long_follows_the_request_limit_too(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    start = mtproto_server.channel_pts(channel.id)
    await _away_posts(mtproto_server, channel, alice.id, [f"p{i}" for i in range(12)])
    await mtproto_server.edit_message(channel.id, 3, "p0 edited")
    await mtproto_server.delete_messages(channel.id, [4])

    async def difference(pts: int, limit: int) -> Any:
        return await b(
            functions.updates.GetChannelDifferenceRequest(
                channel=channel.peer,
                filter=types.ChannelMessagesFilterEmpty(),
                pts=pts,
                limit=limit,
            )
        )

    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        # Telegram: "pts + limit < remote pts" means too many updates to fetch.
        too_long = await difference(start, 10)
        assert isinstance(too_long, types.updates.ChannelDifferenceTooLong)
        assert [m.message for m in too_long.messages] == [f"p{i}" for i in reversed(range(2, 12))]
        diff = await difference(start, 100)
        assert isinstance(diff, types.updates.ChannelDifference)
        assert diff.final
        assert diff.pts == mtproto_server.channel_pts(channel.id)
        # New messages come in their current form; the deleted one is gone.
        texts = [m.message for m in diff.new_messages]
        assert texts == ["p0 edited", *[f"p{i}" for i in range(2, 12)]]
        deletes = [
            u for u in diff.other_updates if isinstance(u, types.UpdateDeleteChannelMessages)
        ]
        assert [u.messages for u in deletes] == [[4]]
        # From after the posts: the edit and the delete as updates with their pts.
        later = await difference(start + 12, 100)
        kinds = [type(u) for u in later.other_updates]
        assert kinds == [types.UpdateEditChannelMessage, types.UpdateDeleteChannelMessages]
        assert later.new_messages == []
        empty = await difference(diff.pts, 100)
        assert isinstance(empty, types.updates.ChannelDifferenceEmpty)
        assert empty.pts == mtproto_server.channel_pts(channel.id)
        with pytest.raises(errors.PersistentTimestampInvalidError):
            await difference(diff.pts + 10, 100)


async def test_edits_and_deletes_reach_message_edited_and_deleted(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        edited: asyncio.Queue[Any] = asyncio.Queue()
        deleted: asyncio.Queue[Any] = asyncio.Queue()

        @b.on(events.MessageEdited)
        async def on_edit(event: Any) -> None:
            await edited.put(event)

        @b.on(events.MessageDeleted)
        async def on_delete(event: Any) -> None:
            await deleted.put(event)

        inbox = Inbox(b)
        first = await a.send_message(channel.peer, "typo")
        second = await a.send_message(channel.peer, "doomed")
        await inbox.until("doomed")
        await a.edit_message(channel.peer, first.id, "fixed")
        event = await asyncio.wait_for(edited.get(), STEP_TIMEOUT)
        assert (event.id, event.raw_text) == (first.id, "fixed")
        assert event.message.edit_date is not None
        await a.delete_messages(channel.peer, [second.id])
        event = await asyncio.wait_for(deleted.get(), STEP_TIMEOUT)
        assert event.deleted_ids == [second.id]
        assert event.chat_id == -1000000000000 - channel.id
        # The control calls make the same updates.
        await mtproto_server.edit_message(channel.id, first.id, "fixed again")
        event = await asyncio.wait_for(edited.get(), STEP_TIMEOUT)
        assert event.raw_text == "fixed again"
        await mtproto_server.delete_messages(channel.id, [first.id])
        event = await asyncio.wait_for(deleted.get(), STEP_TIMEOUT)
        assert event.deleted_ids == [first.id]
        assert await b.get_messages(channel.peer, ids=[first.id, second.id]) == [None, None]
        # Bob may not edit Alice's messages.
        third = await a.send_message(channel.peer, "alice's")
        with pytest.raises(errors.MessageAuthorRequiredError):
            await b.edit_message(channel.peer, third.id, "bob's now")


async def test_read_history_sets_read_marks_truthfully(mtproto_server: MTProtoTestServer) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        read: asyncio.Queue[Any] = asyncio.Queue()

        @a.on(events.MessageRead(inbox=False))
        async def on_read(event: Any) -> None:
            await read.put(event)

        ids = [await mtproto_server.post(channel.id, alice.id, f"m{i}") for i in range(4)]

        async def dialog(client: Any) -> Any:
            answer = await client(
                functions.messages.GetPeerDialogsRequest(
                    peers=[types.InputDialogPeer(channel.peer)]
                )
            )
            return answer.dialogs[0]

        before = await dialog(b)
        assert before.read_inbox_max_id == 0
        # Unread: the two service messages (created, Bob added) and the four posts.
        assert before.unread_count == 6
        assert before.top_message == ids[-1]
        await b.send_read_acknowledge(channel.peer, max_id=ids[1])
        after = await dialog(b)
        assert after.read_inbox_max_id == ids[1]
        assert after.unread_count == 2
        event = await asyncio.wait_for(read.get(), STEP_TIMEOUT)
        assert event.max_id == ids[1]
        assert (await dialog(a)).read_outbox_max_id == ids[1]
        full = await b(functions.channels.GetFullChannelRequest(channel.peer))
        assert full.full_chat.read_inbox_max_id == ids[1]
        assert full.full_chat.pts == mtproto_server.channel_pts(channel.id)
        dialogs = await b.get_dialogs()
        found = next(d for d in dialogs if d.id == -1000000000000 - channel.id)
        assert found.dialog.read_inbox_max_id == ids[1]
        assert found.unread_count == 2


async def test_iter_and_get_messages_on_a_channel(mtproto_server: MTProtoTestServer) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    for i in range(150):
        await mtproto_server.post(channel.id, alice.id, f"n{i}")
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        texts = [m.text async for m in b.iter_messages(channel.peer) if m.text]
        assert texts == [f"n{i}" for i in reversed(range(150))]
        assert len(mtproto_server.requests_for("messages.getHistory")) >= 2
        # Oldest first: the service messages (created, Bob added), then the posts.
        oldest = [m async for m in b.iter_messages(channel.peer, reverse=True, limit=4)]
        assert [m.id for m in oldest] == [1, 2, 3, 4]
        assert [m.text for m in oldest[2:]] == ["n0", "n1"]
        some = await b.get_messages(channel.peer, ids=[3, 10_000])
        assert some[0].text == "n0"
        assert some[1] is None
        entity = await b.get_entity(channel.peer)
        assert isinstance(entity, types.Channel)
        assert entity.title == "Team"


async def test_broadcast_channel_posts_have_no_sender_and_members_cannot_post(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "News", megagroup=False, members=[bob.id])
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        inbox = Inbox(b)
        await mtproto_server.post(channel.id, alice.id, "breaking")
        await inbox.until("breaking")
        message = inbox.events[-1].message
        assert message.post
        assert message.from_id is None
        with pytest.raises(errors.ChatAdminRequiredError):
            await b.send_message(channel.peer, "me too")
        entity = await b.get_entity(channel.peer)
        assert entity.broadcast
        assert not entity.megagroup


async def test_join_and_leave_a_public_supergroup(mtproto_server: MTProtoTestServer) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Open", username="open_team")
    with pytest.raises(ValueError, match="not a valid"):
        mtproto_server.create_channel(alice.id, "Bad", username="1bad")
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        entity = await b.get_entity("open_team")
        assert entity.id == channel.id
        assert entity.left
        await b(functions.channels.JoinChannelRequest(entity))
        inbox = Inbox(b)
        await mtproto_server.post(channel.id, alice.id, "welcome")
        await inbox.until("welcome")
        participants = await b.get_participants(entity)
        assert {p.id for p in participants} == {alice.id, bob.id}
        await b(functions.channels.LeaveChannelRequest(entity))
        entity = await b.get_entity(channel.peer)
        assert entity.left
        with pytest.raises(errors.ChatWriteForbiddenError):
            await b.send_message(channel.peer, "still here?")


async def test_private_channel_is_closed_to_non_members(mtproto_server: MTProtoTestServer) -> None:
    alice, bob = _users(mtproto_server)
    channel = mtproto_server.create_channel(alice.id, "Secret")
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        with pytest.raises(errors.ChannelPrivateError):
            await b.get_messages(channel.peer, limit=5)
        with pytest.raises(errors.ChannelInvalidError):
            await b.get_messages(
                types.InputPeerChannel(channel.id, channel.access_hash + 1), limit=5
            )


async def test_channels_survive_a_restart_with_data_dir(tmp_path: Path) -> None:
    async with MTProtoTestServer(data_dir=tmp_path) as server:
        alice, bob = _users(server)
        channel = server.create_channel(alice.id, "Kept", members=[bob.id], username="kept_chan")
        posted = await server.post(channel.id, alice.id, "remember me")
        pts = server.channel_pts(channel.id)
        await server.restart()
        assert server.channel_pts(channel.id) == pts
        async with telethon_client(server) as b:
            await login(b, server, bob)
            history = await b.get_messages(channel.peer, limit=5)
            assert history[0].id == posted
            assert history[0].text == "remember me"
            assert (await b.get_entity("kept_chan")).id == channel.id
