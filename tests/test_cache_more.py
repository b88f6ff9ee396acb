"""MessageCache: single messages, dialogs, read receipts, bounds, privacy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telethon.tl import functions

from resilient_tg import CacheCorruptError, ConnectionState
from resilient_tg.cache import CacheBackend, MemoryCacheBackend, RedisCacheBackend, Source
from resilient_tg.cache._codec import Codec
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .cachetools import ChatWorld, assert_cache_equals_server, cached_client
from .clienttools import seeded_store
from .conftest import login, telethon_client
from .test_cache_redis import REDIS_URL, delete_prefix
from .test_cache_redis import unique_prefix as redis_prefix

pytestmark = pytest.mark.anyio

KEY = "11" * 32


@pytest.fixture
async def server() -> AsyncIterator[MTProtoTestServer]:
    async with MTProtoTestServer() as server:
        yield server


async def test_get_serves_a_message_inside_a_span_and_none_once_deleted(
    server: MTProtoTestServer,
) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with cached_client(store, server) as (client, _rec, cache):
        await client.wait_connected(10)
        first = await w.send(w.room_id, "first")
        await w.caught_up(client)
        outside = await cache.get(w.room_id, first[1])
        assert outside.source is Source.TELEGRAM
        assert outside.value.message == "first"
        await cache.history(w.room_id, limit=10)  # anchors the span
        server.clear_requests()
        inside = await cache.get(w.room_id, first[1])
        assert inside.source is Source.CACHE
        assert inside.value.message == "first"
        await w.edit(first, "edited")
        await w.caught_up(client)
        assert (await cache.get(w.room_id, first[1])).value.message == "edited"
        await w.delete(first)
        await w.caught_up(client)
        gone = await cache.get(w.room_id, first[1])
        assert gone.source is Source.CACHE
        assert gone.value is None
        assert server.requests == [] or all(r.method == "updates.getState" for r in server.requests)


async def test_dialogs_come_from_the_cache_once_every_dialog_is_known(
    server: MTProtoTestServer,
) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with cached_client(store, server) as (client, _rec, cache):
        await client.wait_connected(10)
        for chat in w.chats():
            await w.send(chat, f"hi {chat}")
        await w.caught_up(client)
        first = await cache.dialogs(10)
        assert first.source is Source.TELEGRAM
        assert {d.chat_id for d in first.value} == set(w.chats())
        await w.send(w.group_id, "group is newest")
        await w.caught_up(client)
        second = await cache.dialogs(10)
        assert second.source is Source.CACHE
        assert second.value[0].chat_id == w.group_id
        assert second.value[0].message.message == "group is newest"
        assert second.value[0].entity is not None


async def test_read_receipts_follow_the_updates(server: MTProtoTestServer) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with (
        cached_client(store, server) as (client, _rec, cache),
        telethon_client(server) as bob,
    ):
        await login(bob, server, w.bob)
        await client.wait_connected(10)
        await w.send(w.private_id, "hello alice")  # Alice's client learns of Bob
        await w.caught_up(client)
        mine = await client.telegram.send_message(w.bob.id, "read me")
        await w.caught_up(client)
        await bob(functions.messages.ReadHistoryRequest(peer=w.alice.id, max_id=mine.id))
        await w.caught_up(client)
        marks = await cache.read_marks(w.bob.id)
        assert marks.outbox_max_id == mine.id
        # The own message sent by the client (updateShortSentMessage) is cached too.
        answer = await cache.history(w.bob.id, limit=5)
        assert answer.value[0].message == "read me"


async def test_bounds_trim_chats_and_evict_the_least_recently_read(
    server: MTProtoTestServer,
) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    backend = MemoryCacheBackend()
    options = {"per_chat": 5, "max_messages": 8}
    async with cached_client(store, server, backend, cache=options) as (client, _rec, cache):
        await client.wait_connected(10)
        for i in range(7):
            await w.send(w.room_id, f"room {i}")
            await w.send(w.private_id, f"private {i}")
        await w.caught_up(client)
        await cache.history(w.private_id, limit=5)
        await cache.history(w.room_id, limit=5)  # read last: the private chat goes first
        await cache.maintain()
        usage = {u.chat_id: u.messages for u in await backend.usage()}
        assert usage.get(w.room_id) == 5
        assert usage.get(w.private_id, 0) == 0
        room = await cache.history(w.room_id, limit=5)
        assert room.source is Source.CACHE
        assert room.value[0].message == "room 6"
        deeper = await cache.history(w.room_id, limit=7)
        assert deeper.source is Source.TELEGRAM  # below the trimmed span


async def test_idle_chats_expire_and_retention_drops_old_messages(
    server: MTProtoTestServer,
) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    backend = MemoryCacheBackend()
    async with cached_client(
        store, server, backend, cache={"idle_ttl": 0.05, "retention": 3600.0}
    ) as (client, _rec, cache):
        await client.wait_connected(10)
        await w.send(w.room_id, "soon idle")
        await w.caught_up(client)
        assert await backend.usage()
        await asyncio.sleep(0.1)  # the TTL itself is what is tested: let it pass
        await cache.maintain()
        assert [u for u in await backend.usage() if u.messages] == []


async def test_auth_lost_purges_the_account(server: MTProtoTestServer) -> None:
    w = ChatWorld(server)
    backend = MemoryCacheBackend()
    async with (
        FaultProxy(server.host, server.port) as proxy,
        cached_client(seeded_store(server, proxy.port, user=w.alice), server, backend) as (
            client,
            rec,
            cache,
        ),
    ):
        await client.wait_connected(10)
        await w.send(w.room_id, "secret")
        await w.caught_up(client)
        await cache.history(w.room_id, limit=5)
        assert await backend.chats(str(w.alice.id))
        server.revoke_auth_keys(w.alice.id)
        proxy.reset()  # the probe after the reconnect finds out
        await rec.state(ConnectionState.AUTH_LOST)
        await rec.until(lambda: not backend._accounts[str(w.alice.id)].chats)
    assert await backend.chats(str(w.alice.id)) == []


async def test_bodies_are_sealed_with_a_key_and_another_key_cannot_read_them(
    server: MTProtoTestServer,
) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    backend = MemoryCacheBackend()
    async with cached_client(store, server, backend, cache={"key": KEY}) as (client, _r, cache):
        await client.wait_connected(10)
        await w.send(w.room_id, "private words")
        await w.caught_up(client)
        answer = await cache.history(w.room_id, limit=5)
        assert answer.value[0].message == "private words"
        stored = await backend.history(str(w.alice.id), w.room_id, below=None, limit=5)
        assert all(b"private words" not in m.body for m in stored)
        other_key = Codec(str(w.alice.id), bytes(32), "memory")  # the records, another key
        with pytest.raises(CacheCorruptError):
            other_key.message(stored[0], {}, client.telegram)


async def test_log_out_purges_the_account(server: MTProtoTestServer) -> None:
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    backend = MemoryCacheBackend()
    async with cached_client(store, server, backend) as (client, _rec, cache):
        await client.wait_connected(10)
        await w.send(w.room_id, "secret")
        await w.caught_up(client)
        await cache.history(w.room_id, limit=5)
        assert await backend.chats(str(w.alice.id))
        await client.telegram.log_out()
    assert await backend.chats(str(w.alice.id)) == []


@pytest.fixture(params=["memory", "redis"])
async def shared_backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    if request.param == "memory":
        yield MemoryCacheBackend()
        return
    prefix = redis_prefix()
    backend = RedisCacheBackend(REDIS_URL, prefix=prefix)
    try:
        yield backend
    finally:
        await backend.aclose()
        await delete_prefix(prefix)


async def test_two_accounts_sharing_a_backend_never_see_each_others_messages(
    server: MTProtoTestServer, shared_backend: CacheBackend
) -> None:
    """Alice and Carol each have a private chat with Bob: the same chat id (Bob's) and,
    per account, the same message ids; one backend keeps them apart by account."""
    w = ChatWorld(server)
    backend = shared_backend
    async with (
        cached_client(seeded_store(server, user=w.alice), server, backend) as (alice, _a, a),
        cached_client(seeded_store(server, user=w.carol), server, backend) as (carol, _c, c),
    ):
        await alice.wait_connected(10)
        await carol.wait_connected(10)
        to_alice = await server.send_message(w.bob.id, w.alice.id, "for alice")
        to_carol = await server.send_message(w.bob.id, w.carol.id, "for carol")
        await w.caught_up(alice)
        for cache in (a, c):
            await cache.history(w.bob.id, limit=5)
        mine = await a.history(w.bob.id, limit=5)
        theirs = await c.history(w.bob.id, limit=5)
        assert mine.from_cache
        assert theirs.from_cache
        assert "for carol" not in [m.message for m in mine.value]
        assert "for alice" not in [m.message for m in theirs.value]
        assert "for alice" in [m.message for m in mine.value]
        assert "for carol" in [m.message for m in theirs.value]
        # By id too: each account's id, whatever the other's is, is its own message.
        assert (await a.get(w.bob.id, to_alice)).value.message == "for alice"
        assert (await c.get(w.bob.id, to_carol)).value.message == "for carol"


def test_complete_is_defined_word_for_word_alike_in_the_code_and_the_docs() -> None:
    import re
    from pathlib import Path

    from resilient_tg.cache import _cache

    def definition(text: str) -> str:
        start = text.index("Complete: per account and chat")
        end = text.index("all others from", start)
        return re.sub(r"[\s>]+", " ", text[start:end])

    docs = Path(__file__).parent.parent / "docs" / "cache.md"
    assert definition(_cache.__doc__ or "") == definition(docs.read_text(encoding="utf-8"))


async def test_own_deletions_and_reads_reach_the_cache(server: MTProtoTestServer) -> None:
    """Telethon hides which ids an own messages.deleteMessages removed (an id-less
    update stands in for it): the cache asks the server for that pts range again, so the
    deleted message leaves the cache and the span stays."""
    w = ChatWorld(server)
    store = seeded_store(server, user=w.alice)
    async with cached_client(store, server) as (client, _rec, cache):
        await client.wait_connected(10)
        _, doomed = await w.send(w.private_id, "to delete")
        await w.send(w.private_id, "to keep")
        await w.caught_up(client)
        assert (await cache.history(w.private_id, limit=5)).source is Source.TELEGRAM
        await client.telegram.delete_messages(w.bob.id, [doomed])
        await client.telegram.send_read_acknowledge(w.bob.id)
        await w.caught_up(client)
        answer = await cache.history(w.private_id, limit=5)
        assert answer.source is Source.CACHE
        assert "to delete" not in [m.message for m in answer.value]
        assert (await cache.get(w.private_id, doomed)).value is None
        await assert_cache_equals_server(client, [w.private_id])
