"""An account gap the server will not replay (differenceTooLong) is never silent.

Telethon 1.45 jumps over such a gap and delivers nothing; the client fetches the
private and basic-group messages of the gap by id, hands each to the handlers once, in
order, and reports one Gap per chat through ``on_gap``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telethon.tl import functions
from telethon.tl.types import updates as updates_t

from resilient_tg import Gap, GapReason
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import running, seeded_store
from .test_client_faults import until_left_connected

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[MTProtoTestServer]:
    async with MTProtoTestServer() as server:
        yield server


async def test_an_account_gap_too_long_to_replay_is_fetched_and_reported(
    server: MTProtoTestServer,
) -> None:
    server.difference_limit = 10
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    carol = server.create_user("+15550003", "Carol")
    texts: list[str] = []
    gaps: list[Gap] = []

    async def send(sender: int, text: str) -> int:
        texts.append(text)
        return await server.send_message(sender, alice.id, text)

    async with FaultProxy(server.host, server.port) as proxy:
        store = seeded_store(server, proxy.port, user=alice)
        async with running(store, server) as (client, rec):
            client.on_gap(gaps.append)
            rec.watch_messages()
            await client.wait_connected(10)
            await send(bob.id, "hello")
            await rec.all_messages(texts)
            proxy.refuse(3600)
            proxy.reset()
            await until_left_connected(rec)
            from_bob = [await send(bob.id, f"bob {i}") for i in range(15)]
            from_carol = [await send(carol.id, f"carol {i}") for i in range(5)]
            proxy.heal()
            await client.wait_connected(15)
            await rec.all_messages(texts, limit=15)
            await send(bob.id, "later")
            await rec.all_messages(texts)
            await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
    assert dict(rec.messages) == dict.fromkeys(texts, 1)
    assert rec.message_order == texts
    assert [(g.chat_id, g.first_id, g.last_id, g.count, g.reason) for g in gaps] == [
        (bob.id, from_bob[0], from_bob[-1], 15, GapReason.DIFFERENCE_TOO_LONG),
        (carol.id, from_carol[0], from_carol[-1], 5, GapReason.DIFFERENCE_TOO_LONG),
    ]
    assert server.requests_for("messages.getMessages")


async def test_server_answers_difference_too_long_past_the_limit_and_user_calls_see_it(
    server: MTProtoTestServer,
) -> None:
    """The test server answers differenceTooLong past ``pts_total_limit`` (Telegram's
    rule); a getDifference the application makes itself gets that answer unchanged (only
    the update loop's own requests are recovered)."""
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    async with running(seeded_store(server, user=alice), server) as (client, _):
        await client.wait_connected(10)
        before = await client.telegram(functions.updates.GetStateRequest())
        for i in range(5):
            await server.send_message(bob.id, alice.id, f"m {i}")
        now = await client.telegram(functions.updates.GetStateRequest())
        ask = functions.updates.GetDifferenceRequest
        too_long = await client.telegram(
            ask(pts=before.pts, date=before.date, qts=0, pts_total_limit=2)
        )
        assert isinstance(too_long, updates_t.DifferenceTooLong)
        assert too_long.pts == now.pts
        whole = await client.telegram(ask(pts=before.pts, date=before.date, qts=0))
        assert isinstance(whole, updates_t.Difference)
        assert [m.message for m in whole.new_messages] == [f"m {i}" for i in range(5)]
