"""Message methods on MTProtoTestServer against real unmodified Telethon: basic groups,
edits, deletes, read marks, get_messages, and what getDifference carries for them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from telethon import errors, events
from telethon.tl import functions, types

from resilient_tg.testing import MTProtoTestServer, TestGroup

from .conftest import STEP_TIMEOUT, login, session_for, telethon_client

pytestmark = pytest.mark.anyio


def _queue(client: Any, builder: Any) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    @client.on(builder)
    async def handler(event: Any) -> None:
        await queue.put(event)

    return queue


async def _next(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)


async def _dialog(client: Any, peer: Any) -> Any:
    answer = await client(
        functions.messages.GetPeerDialogsRequest(
            peers=[types.InputDialogPeer(await client.get_input_entity(peer))]
        )
    )
    return answer.dialogs[0]


async def test_basic_group_create_add_and_post(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice", username="alice")
    bob = mtproto_server.create_user("+15550002", "Bob", username="bobby")
    carol = mtproto_server.create_user("+15550003", "Carol", username="carol")
    async with (
        telethon_client(mtproto_server) as a,
        telethon_client(mtproto_server) as b,
        telethon_client(mtproto_server) as c,
    ):
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        await login(c, mtproto_server, carol)
        bob_news = _queue(b, events.NewMessage(incoming=True))
        carol_news = _queue(c, events.NewMessage(incoming=True))
        created = await a(
            functions.messages.CreateChatRequest(
                users=[await a.get_input_entity("bobby")], title="Trio"
            )
        )
        chat = created.updates.chats[0]
        assert isinstance(chat, types.Chat)
        assert chat.participants_count == 2
        await a.send_message(chat, "hi group")
        event = await _next(bob_news)
        assert event.raw_text == "hi group"
        assert event.chat_id == -chat.id
        assert event.sender_id == alice.id
        await a(
            functions.messages.AddChatUserRequest(
                chat_id=chat.id, user_id=await a.get_input_entity("carol"), fwd_limit=0
            )
        )
        await mtproto_server.post(chat.id, alice.id, "welcome carol")
        assert (await _next(bob_news)).raw_text == "welcome carol"
        assert (await _next(carol_news)).raw_text == "welcome carol"
        await c.send_message(-chat.id, "thanks")
        assert (await _next(bob_news)).raw_text == "thanks"
        history = await b.get_messages(-chat.id, limit=10)
        assert [m.text for m in history if m.text] == ["thanks", "welcome carol", "hi group"]
        actions = [type(m.action) for m in history if m.action]
        assert actions == [types.MessageActionChatAddUser, types.MessageActionChatCreate]
        # Carol joined later: her box starts with her being added.
        carol_history = await c.get_messages(-chat.id, limit=10)
        assert [m.text for m in carol_history if m.text] == ["thanks", "welcome carol"]
        full = await b(functions.messages.GetFullChatRequest(chat.id))
        assert {p.user_id for p in full.full_chat.participants.participants} == {
            alice.id,
            bob.id,
            carol.id,
        }


async def test_message_ids_are_per_box_in_basic_groups(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    await mtproto_server.send_message(alice.id, bob.id, "private first")
    await mtproto_server.send_message(alice.id, bob.id, "private second")
    group = mtproto_server.create_group(bob.id, "Pair", [alice.id])
    assert isinstance(group, TestGroup)
    alice_id = await mtproto_server.post(group.id, alice.id, "in the group")
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        history = await b.get_messages(group.peer, limit=5)
        assert history[0].text == "in the group"
        # Bob's box: two private messages, the create message, then this one.
        assert history[0].id == 4
        assert alice_id == 4  # Alice's box has the same shape here
        found = await b.get_messages(group.peer, ids=[4, 99])
        assert found[0].text == "in the group"
        assert found[1] is None


async def test_private_edit_and_delete_reach_the_other_side(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice", username="alice")
    bob = mtproto_server.create_user("+15550002", "Bob", username="bobby")
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        news = _queue(b, events.NewMessage(incoming=True))
        edits = _queue(b, events.MessageEdited)
        deletes = _queue(b, events.MessageDeleted)
        # A note to herself shifts Alice's box: her ids differ from Bob's from now on.
        await mtproto_server.send_message(alice.id, alice.id, "note to self")
        await a.send_message("bobby", "warmup")
        await _next(news)
        first = await a.send_message("bobby", "tpyo")
        bob_first = (await _next(news)).message.id
        assert bob_first != first.id
        await a.edit_message("bobby", first.id, "typo fixed")
        edited = await _next(edits)
        assert (edited.id, edited.raw_text) == (bob_first, "typo fixed")
        with pytest.raises(errors.MessageAuthorRequiredError):
            await b.edit_message(alice.id, bob_first, "not yours")
        with pytest.raises(errors.MessageNotModifiedError):
            await a.edit_message("bobby", first.id, "typo fixed")
        await a.delete_messages("bobby", [first.id], revoke=True)
        deleted = await _next(deletes)
        assert deleted.deleted_ids == [bob_first]
        assert [m.text for m in await b.get_messages(alice.id, limit=5)] == ["warmup"]
        # Without revoke only the deleter's copy goes.
        second = await a.send_message("bobby", "keep for bob")
        await _next(news)
        await a.delete_messages("bobby", [second.id], revoke=False)
        assert [m.text for m in await a.get_messages("bobby", limit=5)] == ["warmup"]
        texts = [m.text for m in await b.get_messages(alice.id, limit=5)]
        assert texts == ["keep for bob", "warmup"]
        # Control calls edit every copy too.
        bob_second = (await b.get_messages(alice.id, limit=1))[0].id
        await mtproto_server.edit_message(bob.id, bob_second, "edited by the server")
        assert (await _next(edits)).raw_text == "edited by the server"


async def test_read_history_moves_both_sides_read_marks(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice", username="alice")
    bob = mtproto_server.create_user("+15550002", "Bob", username="bobby")
    async with (
        telethon_client(mtproto_server) as a,
        telethon_client(mtproto_server) as b1,
        telethon_client(mtproto_server) as b2,
    ):
        await login(a, mtproto_server, alice)
        await login(b1, mtproto_server, bob)
        await login(b2, mtproto_server, bob)
        outbox_reads = _queue(a, events.MessageRead(inbox=False))
        other_session_reads = _queue(b2, events.MessageRead(inbox=True))
        sent = [await a.send_message("bobby", f"m{i}") for i in range(3)]
        history = await b1.get_messages("alice", limit=3)
        bob_ids = sorted(m.id for m in history)
        before = await _dialog(b1, "alice")
        assert (before.read_inbox_max_id, before.unread_count) == (0, 3)
        await b1.send_read_acknowledge("alice", max_id=bob_ids[1])
        after = await _dialog(b1, "alice")
        assert (after.read_inbox_max_id, after.unread_count) == (bob_ids[1], 1)
        assert (await _next(other_session_reads)).max_id == bob_ids[1]
        # Alice learns, in her own ids, how far Bob has read.
        assert (await _next(outbox_reads)).max_id == sent[1].id
        assert (await _dialog(a, "bobby")).read_outbox_max_id == sent[1].id
        dialogs = await b1.get_dialogs()
        with_alice = next(d for d in dialogs if d.id == alice.id)
        assert with_alice.dialog.read_inbox_max_id == bob_ids[1]
        assert with_alice.unread_count == 1
        # Reading everything (max_id=0) reads up to the newest incoming message.
        await b1.send_read_acknowledge("alice")
        assert (await _dialog(b1, "alice")).unread_count == 0


async def test_get_difference_carries_edits_deletes_and_channel_too_long(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    channel = mtproto_server.create_channel(alice.id, "Team", members=[bob.id])
    await mtproto_server.send_message(alice.id, bob.id, "before")
    bob_session = session_for(mtproto_server)
    async with telethon_client(mtproto_server, session=bob_session) as b:
        await login(b, mtproto_server, bob)
        state = await b(functions.updates.GetStateRequest())
        await mtproto_server.send_message(alice.id, bob.id, "new one")
        await mtproto_server.edit_message(bob.id, 1, "before, edited")
        await mtproto_server.delete_messages(bob.id, [2])
        await mtproto_server.post(channel.id, alice.id, "in the channel")
        diff = await b(
            functions.updates.GetDifferenceRequest(pts=state.pts, date=state.date, qts=0)
        )
        assert isinstance(diff, types.updates.Difference)
        assert [m.message for m in diff.new_messages] == []  # "new one" is deleted
        kinds = {type(u): u for u in diff.other_updates}
        assert kinds[types.UpdateEditMessage].message.message == "before, edited"
        assert kinds[types.UpdateDeleteMessages].messages == [2]
        too_long = kinds[types.UpdateChannelTooLong]
        assert too_long.channel_id == channel.id
        assert too_long.pts == mtproto_server.channel_pts(channel.id)
        assert diff.state.pts == state.pts + 3
        assert any(isinstance(c, types.Channel) and c.id == channel.id for c in diff.chats)


async def test_errors_for_wrong_peers_and_empty_text(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    carol = mtproto_server.create_user("+15550003", "Carol")
    group = mtproto_server.create_group(alice.id, "Two", [bob.id])
    async with telethon_client(mtproto_server) as c:
        await login(c, mtproto_server, carol)
        with pytest.raises(errors.ChatIdInvalidError):
            await c.send_message(group.peer, "let me in")
        with pytest.raises(errors.MessageEmptyError):
            await c(
                functions.messages.SendMessageRequest(
                    peer=types.InputPeerSelf(), message=" ", random_id=1
                )
            )
    with pytest.raises(ValueError, match="not a member"):
        await mtproto_server.post(group.id, carol.id, "hi")
    with pytest.raises(LookupError):
        await mtproto_server.post(12345, alice.id, "hi")
    with pytest.raises(LookupError):
        await mtproto_server.edit_message(alice.id, 999, "nothing there")
    with pytest.raises(ValueError, match="at least one member"):
        mtproto_server.create_group(alice.id, "Alone", [])


async def test_groups_and_read_marks_survive_a_restart(tmp_path: Path) -> None:
    async with MTProtoTestServer(data_dir=tmp_path) as server:
        alice = server.create_user("+15550001", "Alice", username="alice")
        bob = server.create_user("+15550002", "Bob")
        group = server.create_group(alice.id, "Kept", [bob.id])
        await server.post(group.id, alice.id, "group text")
        await server.send_message(alice.id, bob.id, "private text")
        async with telethon_client(server) as b:
            await login(b, server, bob)
            await b.send_read_acknowledge("alice")
        await server.restart()
        async with telethon_client(server) as b:
            await login(b, server, bob)
            assert [m.text for m in await b.get_messages(group.peer, limit=1)] == ["group text"]
            dialog = await _dialog(b, alice.id)
            assert dialog.read_inbox_max_id == dialog.top_message
            assert dialog.unread_count == 0
