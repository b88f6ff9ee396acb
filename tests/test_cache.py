"""MessageCache against the real test server: reads, spans, updates, staleness."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from resilient_tg import Gap, ResilientTgError
from resilient_tg.cache import MemoryCacheBackend, Source, StaleCacheError
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .cachetools import (
    ChatWorld,
    assert_cache_equals_server,
    cached_client,
    same,
    server_history,
)
from .clienttools import Recorder, running, seeded_store
from .test_client_faults import until_left_connected

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[MTProtoTestServer]:
    async with MTProtoTestServer() as server:
        yield server


async def test_a_cached_range_is_read_without_a_request(server: MTProtoTestServer) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with cached_client(store, server) as (client, rec, cache):
        rec.watch_messages()
        await client.wait_connected(10)
        texts = [f"hello {i}" for i in range(5)]
        for text in texts:
            await w.send(w.private_id, text)
        await rec.all_messages(texts)
        first = await cache.history(w.private_id, limit=3)
        assert first.source is Source.TELEGRAM
        assert [m.message for m in first.value] == ["hello 4", "hello 3", "hello 2"]
        server.clear_requests()
        again = await cache.history(w.private_id, limit=3)
        assert again.source is Source.CACHE
        assert not again.stale
        assert [m.message for m in again.value] == ["hello 4", "hello 3", "hello 2"]
        await w.send(w.private_id, "new")
        await rec.all_messages(["new"])
        after = await cache.history(w.private_id, limit=3)
        assert after.source is Source.CACHE
        assert [m.message for m in after.value] == ["new", "hello 4", "hello 3"]
        assert after.value[0].sender_id == w.bob.id
        assert server.requests_for("messages.getHistory") == []
        truth = await server_history(client, w.private_id)
        assert all(same(a, b) for a, b in zip(after.value, truth, strict=False))


async def test_cache_equals_server_after_new_edited_and_deleted_messages(
    server: MTProtoTestServer,
) -> None:
    """A private chat, a basic group and a supergroup: a stream of new, edited and deleted
    messages after the first read; the cache then answers every chat from itself, equal
    to the server's history message by message, without a getHistory."""
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with cached_client(store, server) as (client, _rec, cache):
        await client.wait_connected(10)
        handles = {chat: [await w.send(chat, f"first {chat}")] for chat in w.chats()}
        await w.caught_up(client)
        for chat in w.chats():
            assert (await cache.history(chat, limit=10)).source is Source.TELEGRAM
        for i in range(12):
            for chat in w.chats():
                handles[chat].append(await w.send(chat, f"m{i} {chat}"))
                if i % 3 == 1:
                    await w.edit(handles[chat][-2], f"edited {i} {chat}")
                if i % 4 == 2:
                    await w.delete(handles[chat].pop(1))
        await w.caught_up(client)
        server.clear_requests()
        await assert_cache_equals_server(client, w.chats())
        history_calls = list(server.requests_for("messages.getHistory"))
        # Only the comparison's own server reads: one per chat.
        assert len(history_calls) == len(w.chats())


@pytest.fixture
async def proxy(server: MTProtoTestServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(server.host, server.port) as proxy:
        yield proxy


async def outage(rec: Recorder, proxy: FaultProxy) -> None:
    """Cut the link (connects refused) and wait until the client has seen it."""
    proxy.refuse(3600)
    proxy.reset()
    await until_left_connected(rec)


@pytest.mark.parametrize("kind", ["supergroup", "private"])
async def test_a_gap_too_long_ends_the_span_and_the_next_read_goes_to_telegram(
    server: MTProtoTestServer, proxy: FaultProxy, kind: str
) -> None:
    """While cut off, more happens than the server replays (a "too long" difference),
    including a deletion the client can never learn of: the chat's span ends, so the next
    read goes to Telegram, and its answer (the deleted message gone) is what the cache
    then holds and serves."""
    server.channel_difference_limit = 5
    server.difference_limit = 5
    w = ChatWorld(server)
    chat = w.room_id if kind == "supergroup" else w.private_id
    store = seeded_store(server, proxy.port, user=w.alice)
    gaps: list[Gap] = []
    async with cached_client(store, server) as (client, rec, cache):
        client.on_gap(gaps.append)
        await client.wait_connected(10)
        doomed = await w.send(chat, "doomed")
        await w.send(chat, "kept")
        await w.caught_up(client)
        assert (await cache.history(chat, limit=5)).source is Source.TELEGRAM
        assert (await cache.history(chat, limit=5)).source is Source.CACHE
        await outage(rec, proxy)
        await w.delete(doomed)
        for i in range(12):
            await w.send(chat, f"missed {i}")
        proxy.heal()
        await client.wait_connected(15)
        await rec.until(lambda: bool(gaps))
        await w.caught_up(client)
        server.clear_requests()
        after = await cache.history(chat, limit=20)
        assert after.source is Source.TELEGRAM
        assert len(server.requests_for("messages.getHistory")) == 1
        assert "doomed" not in [m.message for m in after.value]
        await assert_cache_equals_server(client, [chat])


async def test_reads_while_down_are_stale_or_refused_when_fresh_is_asked(
    server: MTProtoTestServer, proxy: FaultProxy
) -> None:
    """While the link is down a read is answered from the cache, marked stale with the
    time it was last known current; ``fresh=True`` is refused with StaleCacheError."""
    w = ChatWorld(server)
    store = seeded_store(server, proxy.port, user=w.alice)
    async with cached_client(store, server) as (client, rec, cache):
        await client.wait_connected(10)
        await w.send(w.room_id, "one")
        await w.caught_up(client)
        current = await cache.history(w.room_id, limit=5)
        assert not current.stale
        before = time.time()
        await outage(rec, proxy)
        stale = await cache.history(w.room_id, limit=5)
        assert stale.stale
        assert stale.source is Source.CACHE
        assert stale.complete
        assert [m.message for m in stale.value if m.message] == ["one"]
        assert current.as_of <= stale.as_of <= time.time()
        assert stale.as_of >= before - 1
        one = await cache.get(w.room_id, stale.value[0].id)
        assert one.stale
        assert one.value is not None
        assert one.value.message == "one"
        with pytest.raises(StaleCacheError) as refused:
            await cache.history(w.room_id, limit=5, fresh=True)
        assert refused.value.as_of == stale.as_of
        assert isinstance(refused.value, ResilientTgError)
        with pytest.raises(StaleCacheError):
            await cache.get(w.room_id, 1, fresh=True)
        proxy.heal()
        await client.wait_connected(15)
        fresh = await cache.history(w.room_id, limit=5, fresh=True)
        assert not fresh.stale
        assert fresh.from_cache


async def test_a_restart_behind_the_session_ends_spans_and_reads_go_to_telegram(
    server: MTProtoTestServer,
) -> None:
    """Updates that reached the session but not the cache (a run without the cache)
    move the session's pts past the cache's cursor: on the next start the affected spans
    end and reads go to Telegram (every private chat and basic group: they share the
    account's pts); a supergroup whose pts did not move keeps its span."""
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    backend = MemoryCacheBackend()
    async with cached_client(store, server, backend) as (client, rec, cache):
        await client.wait_connected(10)
        for chat in w.chats():
            await w.send(chat, f"before {chat}")
        await w.caught_up(client)
        for chat in w.chats():
            await cache.history(chat, limit=5)
    async with running(store, server) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await w.send(w.private_id, "behind the cache's back")
        await rec.all_messages(["behind the cache's back"])
    async with cached_client(store, server, backend) as (client, rec, cache):
        await client.wait_connected(10)
        await w.caught_up(client)
        private = await cache.history(w.private_id, limit=5)
        assert private.source is Source.TELEGRAM
        assert private.value[0].message == "behind the cache's back"
        # A basic group shares the account's pts with private chats: its span ended too.
        assert (await cache.history(w.group_id, limit=5)).source is Source.TELEGRAM
        room = await cache.history(w.room_id, limit=5)
        assert room.source is Source.CACHE
        await assert_cache_equals_server(client, w.chats())
