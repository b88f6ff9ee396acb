"""Supergroup posts through faults: every post reaches the handlers exactly once.

The fault matrix of test_client_faults, for a supergroup instead of private messages
(its own pts, recovered with getChannelDifference); a quiet round after a fault (the
posts missed while down arrive without a later post revealing the gap); and a gap too
long for the server to replay (channelDifferenceTooLong), which the client recovers
with getHistory and reports through ``on_gap``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from telethon import utils
from telethon.tl import types

from resilient_tg import ConnectionState, Gap, GapReason
from resilient_tg.stores import MemoryStore
from resilient_tg.testing import FaultProxy, MTProtoTestServer, TestChannel

from .clienttools import Recorder, running, seeded_store
from .test_client_faults import FAULTS, until_left_connected

pytestmark = pytest.mark.anyio

S = ConnectionState


class World:
    def __init__(self, server: MTProtoTestServer, proxy: FaultProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.alice = server.create_user("+15550001", "Alice")
        self.bob = server.create_user("+15550002", "Bob")
        self.room: TestChannel = server.create_channel(
            self.bob.id, "Room", megagroup=True, members=[self.alice.id]
        )
        # Held by posts and by a restart: a post made while the server swaps in its
        # reloaded state would be lost by the server, not by the client.
        self.world_lock = asyncio.Lock()

    @property
    def chat_id(self) -> int:
        """The supergroup as Telethon's marked peer id."""
        return int(utils.get_peer_id(types.PeerChannel(self.room.id)))

    async def post(self, texts: list[str], text: str) -> int:
        async with self.world_lock:
            message_id = await self.server.post(self.room.id, self.bob.id, text)
        texts.append(text)
        return message_id


async def fault_server_restart(w: World, rec: Recorder) -> None:
    async with w.world_lock:
        await w.server.restart()  # state kept (data_dir): same keys, same posts
    await until_left_connected(rec)


CHANNEL_FAULTS = {**FAULTS, "server_restart": fault_server_restart}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        MTProtoTestServer(data_dir=tmp_path / "server") as server,
        FaultProxy(server.host, server.port) as proxy,
    ):
        yield World(server, proxy)


async def post_burst(w: World, texts: list[str], n: int, label: str) -> None:
    for i in range(n):
        await w.post(texts, f"{label} {i}")
        await asyncio.sleep(0.02)


async def joined(w: World, rec: Recorder, texts: list[str]) -> None:
    """A first post reaches the client: it now knows the supergroup and its pts."""
    await w.post(texts, "hello")
    await rec.all_messages(texts)


def exactly_once(rec: Recorder, texts: list[str]) -> None:
    assert {t: rec.messages[t] for t in texts} == dict.fromkeys(texts, 1)
    assert sum(rec.messages.values()) == len(texts)


@pytest.mark.parametrize("phase", ["idle", "burst"])
@pytest.mark.parametrize("fault", list(CHANNEL_FAULTS))
async def test_supergroup_posts_survive_the_fault_matrix_exactly_once(
    world: World, fault: str, phase: str
) -> None:
    w = world
    store = seeded_store(w.server, w.proxy.port, user=w.alice)
    posted: list[str] = []
    async with running(store, w.server, request_timeout=8.0) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await joined(w, rec, posted)
        burst = None
        if phase == "burst":
            burst = asyncio.ensure_future(post_burst(w, posted, 20, "burst"))
        await CHANNEL_FAULTS[fault](w, rec)  # type: ignore[operator]  # duck-typed World
        if burst is not None:
            await asyncio.wait_for(burst, 20)
        await client.wait_connected(15)
        await rec.until(lambda: client.health().healthy, limit=10)
        await post_burst(w, posted, 3, "after")
        await rec.all_messages(posted, limit=15)
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
    exactly_once(rec, posted)
    # Posts of one supergroup reach the handlers in the order they were posted.
    assert rec.message_order == posted
    if fault != "server_restart" or phase != "idle":
        assert S.RECONNECTING in rec.states() or S.CONNECTING in rec.states()[1:]
    assert rec.states()[-2:] == [S.CONNECTED, S.CLOSED]


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_posts_missed_while_down_arrive_after_a_quiet_heal(world: World, fault: str) -> None:
    """Posts made while the link is down arrive once the link is back, with nothing else
    posted afterwards to reveal the gap; later posts arrive too, each once."""
    w = world
    store = seeded_store(w.server, w.proxy.port, user=w.alice)
    posted: list[str] = []
    async with running(store, w.server) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await joined(w, rec, posted)
        for n in range(2):
            if fault == "refuse":
                w.proxy.refuse(3600)
                w.proxy.reset()
            else:
                w.proxy.blackhole()
            await until_left_connected(rec)
            rec.changes.clear()
            missed = [f"missed {n} {i}" for i in range(3)]
            for text in missed:
                await w.post(posted, text)
            w.proxy.heal()
            await client.wait_connected(15)
            # Quiet: nothing is posted now; what was missed must come by itself.
            await rec.all_messages(missed, limit=10)
        await post_burst(w, posted, 3, "after")
        await rec.all_messages(posted, limit=10)
        await asyncio.sleep(0.3)
    exactly_once(rec, posted)
    assert rec.message_order == posted


async def test_a_gap_too_long_to_replay_is_fetched_and_reported(world: World) -> None:
    """More posts than the server replays (channelDifferenceTooLong) while the client is
    cut off: after recovery the handlers see every missed post once, in order, the gap
    callback names the chat and the recovered ids once, and later posts are not
    duplicated."""
    w = world
    w.server.channel_difference_limit = 20
    store = seeded_store(w.server, w.proxy.port, user=w.alice)
    posted: list[str] = []
    gaps: list[Gap] = []
    async with running(store, w.server) as (client, rec):

        @client.on_gap
        async def on_gap(gap: Gap) -> None:
            gaps.append(gap)

        rec.watch_messages()
        await client.wait_connected(10)
        await joined(w, rec, posted)
        w.proxy.refuse(3600)
        w.proxy.reset()
        await until_left_connected(rec)
        missed: list[str] = []
        ids = [await w.post(missed, f"missed {i}") for i in range(35)]
        posted += missed
        assert w.server.channel_pts(w.room.id) - 35 >= 1  # the gap is wider than the limit
        w.proxy.heal()
        await client.wait_connected(15)
        await rec.all_messages(missed, limit=15)
        await rec.until(lambda: bool(gaps), limit=5)
        await post_burst(w, posted, 3, "after")
        await rec.all_messages(posted, limit=10)
        await asyncio.sleep(0.3)
    exactly_once(rec, posted)
    assert rec.message_order == posted
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.chat_id, gap.first_id, gap.last_id, gap.count) == (
        w.chat_id,
        ids[0],
        ids[-1],
        35,
    )
    assert gap.reason is GapReason.CHANNEL_DIFFERENCE_TOO_LONG
    # The recovery went through getHistory, not a replayed difference.
    assert w.server.requests_for("messages.getHistory")


async def test_a_gap_with_no_known_start_is_reported_without_a_range(world: World) -> None:
    """A client that restarts into a too-long gap has seen no message of the chat since it
    started: nothing can be recovered, and the gap callback says so (no ids, count 0)."""
    w = world
    w.server.channel_difference_limit = 5
    store: MemoryStore = seeded_store(w.server, w.proxy.port, user=w.alice)
    posted: list[str] = []
    async with running(store, w.server) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await joined(w, rec, posted)
    for i in range(10):
        await w.post([], f"while stopped {i}")
    gaps: list[Gap] = []
    async with running(store, w.server) as (client, rec):
        client.on_gap(gaps.append)
        rec.watch_messages()
        await client.wait_connected(10)
        await rec.until(lambda: bool(gaps), limit=10)
        later: list[str] = []
        await w.post(later, "later")
        await rec.all_messages(later)
        await asyncio.sleep(0.3)
    assert [(g.chat_id, g.first_id, g.last_id, g.count) for g in gaps] == [
        (w.chat_id, None, None, 0)
    ]
    assert dict(rec.messages) == {"later": 1}


async def test_a_refused_history_reports_the_gap_and_later_posts_still_flow(
    world: World,
) -> None:
    """getHistory refused for good (as for a bot): the gap is reported without a range,
    and the supergroup's later posts still arrive (its pts moved on)."""
    w = world
    w.server.channel_difference_limit = 5
    store = seeded_store(w.server, w.proxy.port, user=w.alice)
    posted: list[str] = []
    gaps: list[Gap] = []
    async with running(store, w.server) as (client, rec):
        client.on_gap(gaps.append)
        rec.watch_messages()
        await client.wait_connected(10)
        await joined(w, rec, posted)
        w.proxy.refuse(3600)
        w.proxy.reset()
        await until_left_connected(rec)
        for i in range(10):
            await w.post([], f"missed {i}")
        w.server.inject_rpc_error("messages.getHistory", "BOT_METHOD_INVALID", code=400)
        w.proxy.heal()
        await client.wait_connected(15)
        await rec.until(lambda: bool(gaps), limit=10)
        await post_burst(w, posted, 3, "after")
        await rec.all_messages(posted, limit=10)
        await asyncio.sleep(0.3)
    exactly_once(rec, posted)
    assert [(g.chat_id, g.first_id, g.last_id, g.count) for g in gaps] == [
        (w.chat_id, None, None, 0)
    ]
