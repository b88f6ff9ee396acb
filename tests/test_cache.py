"""MessageCache against the real test server: reads, spans, updates, staleness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resilient_tg.cache import Source
from resilient_tg.testing import MTProtoTestServer

from .cachetools import ChatWorld, cached_client, same, server_history
from .clienttools import seeded_store

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
        assert again.source is Source.CACHE and not again.stale
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
