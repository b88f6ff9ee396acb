"""8. Message cache: history reads answered by a MessageCache vs the same reads through
Telegram (the test server), and the server requests saved.

One MTProtoTestServer; ``CHATS`` private chats of Alice, each with ``SEED`` messages sent
before any client connects. Per backend (memory, PostgreSQL, Redis; quick mode: memory
and Redis) one ResilientClient logged in as Alice with a MessageCache on that backend.
Warm-up: one read per chat (from Telegram: it anchors the chat's span). Then the same
seeded sequence of ``READS`` reads (a random chat, ``LIMIT`` messages, below the newest
or a random cached id), in interleaved blocks of ``BLOCK`` so that drift hits both sides
alike: raw Telethon's ``get_messages`` (one messages.getHistory each) on the client's
own TelegramClient, and ``MessageCache.history``. Every ``NEW_EVERY`` reads of either
side a chat gets a new message on the server, which the cache applies as an update.

Reads are one at a time (a latency-bound caller); the server runs in this process, so
a Telegram read's time includes the server's work (a real Telegram round trip is
20-200 ms, not ~1 ms: the ratio here is a lower bound). Requests are counted from the
server's request record; the hit rate is the share of cache reads answered from the
cache (``Source.CACHE``) after the warm-up. PostgreSQL tables (a unique prefix, a pool
of two) are dropped and Redis keys (a unique prefix) deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telethon.tl import types

from resilient_tg import ResilientClient
from resilient_tg.cache import CacheBackend, MemoryCacheBackend, MessageCache, Source
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import MTProtoTestServer, TestUser

from ._common import (
    OURS,
    STEP_LIMIT,
    Config,
    Row,
    Scenario,
    bench_server,
    new_user,
)

NAME = "cache"
TITLE = "Message cache: reads from the cache vs through Telegram"
GOAL = (
    "after warm-up, >= 90% of history reads answered from the cache, with no request to the server"
)
TELETHON_READS = "telethon (get_messages)"
LIMIT = 20
BLOCK = 50
NEW_EVERY = 25
PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RESILIENT_TG_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    reads = cfg.n(1000, 100)
    chats = 10
    seed = cfg.n(60, 30)
    backends = ("memory", "PostgreSQL", "Redis") if not cfg.quick else ("memory", "Redis")
    rng = cfg.rng(NAME)
    result.raw = {"reads": reads, "chats": chats, "seed_messages": seed, "limit": LIMIT}
    async with bench_server(result) as server:
        alice = new_user(server, "Alice")
        senders = [new_user(server, f"Friend {i}") for i in range(chats)]
        ids: dict[int, list[int]] = {}
        for user in senders:
            ids[user.id] = [
                await server.send_message(user.id, alice.id, f"m{i} from {user.id}")
                for i in range(seed)
            ]
        # The same sequence for every backend and both sides: (chat, offset_id).
        plan = [_pick(rng, ids) for _ in range(reads)]
        news = [rng.choice(senders) for _ in range(reads // NEW_EVERY * 2 + 1)]
        for kind in backends:
            backend, cleanup = await _backend(kind)
            try:
                measured = await _measure(server, alice, senders, backend, plan, news)
            finally:
                await cleanup()
            result.raw[kind] = measured
            _rows(result, kind, reads, chats, measured)
    return result


def _pick(rng: Any, ids: dict[int, list[int]]) -> tuple[int, int]:
    chat = rng.choice(sorted(ids))
    # Half the reads are the newest page; the others page from a seeded message.
    offset = 0 if rng.random() < 0.5 else rng.choice(ids[chat][LIMIT:])
    return chat, offset


async def _backend(kind: str) -> tuple[CacheBackend, Callable[[], Awaitable[None]]]:
    """A fresh backend of ``kind``, and what removes its data and closes it."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(3)}"
    if kind == "memory":
        memory = MemoryCacheBackend()

        async def nothing() -> None:
            await memory.aclose()

        return memory, nothing
    if kind == "PostgreSQL":
        from resilient_tg.cache import SQLCacheBackend

        sql = SQLCacheBackend(PG_URL, table_prefix=f"rtgb_{tag}_", pool_size=2, max_overflow=0)

        async def drop() -> None:
            import sqlalchemy as sa

            try:
                engine = await sql._db.ready()
                async with engine.begin() as conn:
                    for table in reversed(sql._db.tables.meta.sorted_tables):
                        await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
            finally:
                await sql.aclose()

        return sql, drop
    from redis import asyncio as aioredis

    from resilient_tg.cache import RedisCacheBackend

    prefix = f"rtg-bench:{tag}"
    redis = RedisCacheBackend(REDIS_URL, prefix=prefix)

    async def delete() -> None:
        await redis.aclose()
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()

    return redis, delete


async def _measure(
    server: MTProtoTestServer,
    alice: TestUser,
    senders: list[TestUser],
    backend: CacheBackend,
    plan: list[tuple[int, int]],
    news: list[TestUser],
) -> dict[str, Any]:
    peers = {u.id: types.InputPeerUser(u.id, u.access_hash) for u in senders}
    sent = iter(news)
    key = server.issue_auth_key(alice.id)
    store = MemoryStore(
        SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port, auth_key=key)
    )
    client = ResilientClient(store, server.api_id, server.api_hash, shutdown_timeout=5.0)
    cache = MessageCache(client, backend)  # before entering: it sees every update
    async with client:
        await client.wait_connected(STEP_LIMIT)
        telegram = client.telegram
        warm_sources = []
        for user in senders:  # Telethon learns the peers; each chat's span is anchored
            await telegram.get_messages(peers[user.id], limit=1)
            warm_sources.append((await cache.history(user.id, limit=LIMIT)).source.value)
        times = {"telegram": 0.0, "cache": 0.0}
        requests = {"telegram": 0, "cache": 0}
        sources: list[str] = []
        for start in range(0, len(plan), BLOCK):
            block = plan[start : start + BLOCK]
            for side in ("telegram", "cache"):
                server.clear_requests()
                elapsed = 0.0
                for i, (chat, offset) in enumerate(block, start):
                    if i % NEW_EVERY == 0:  # outside the timing: the server's work
                        user = next(sent)
                        await server.send_message(user.id, alice.id, f"new {side} {i}")
                    began = time.perf_counter()
                    if side == "telegram":
                        await telegram.get_messages(peers[chat], limit=LIMIT, offset_id=offset)
                    else:
                        answer = await cache.history(chat, limit=LIMIT, offset_id=offset)
                        sources.append(answer.source.value)
                    elapsed += time.perf_counter() - began
                times[side] += elapsed
                requests[side] += len(server.requests)  # any method
    reads = len(plan)
    hits = sources.count(Source.CACHE.value)
    return {
        "backend": backend.describe(),
        "warm_up_sources": warm_sources,
        "seconds": {k: round(v, 4) for k, v in times.items()},
        "reads_per_second": {k: round(reads / v, 1) for k, v in times.items()},
        "server_requests": requests,
        "hits": hits,
        "hit_rate": hits / reads,
    }


def _rows(result: Scenario, kind: str, reads: int, chats: int, m: dict[str, Any]) -> None:
    case = f"{kind}: {reads} reads, {chats} chats"
    rate = m["reads_per_second"]
    speedup = rate["cache"] / rate["telegram"]
    saved = m["server_requests"]["telegram"] - m["server_requests"]["cache"]
    hit_rate = m["hit_rate"]
    result.rows += [
        Row(NAME, case, OURS, "reads/s", rate["cache"], "/s", 1.0, f"{speedup:.1f}x Telegram"),
        Row(NAME, case, TELETHON_READS, "reads/s", rate["telegram"], "/s", 1 / speedup),
        Row(
            NAME,
            case,
            OURS,
            "server requests",
            m["server_requests"]["cache"],
            "",
            None,
            f"0 ({saved} saved)",
            m["server_requests"]["cache"] == 0,
        ),
        Row(NAME, case, TELETHON_READS, "server requests", m["server_requests"]["telegram"]),
        Row(
            NAME,
            case,
            OURS,
            "hit rate",
            f"{hit_rate:.1%}",
            "",
            None,
            ">= 90%",
            hit_rate >= 0.9,
        ),
    ]
