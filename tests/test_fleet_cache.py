"""A fleet with a shared message cache: two in-process workers over the real PostgreSQL,
one RedisCacheBackend (or SQLCacheBackend) shared by both, the real test server.

Each account's cache is keyed by its fleet name, so it moves with the account; removing
an account purges its cache, whether a worker runs it or not; AUTH_LOST purges through
the MessageCache itself. Nothing here skips: a missing database or Redis fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from telethon.tl import functions

from resilient_tg import ResilientClient, _compat
from resilient_tg.cache import (
    CacheBackend,
    MemoryCacheBackend,
    RedisCacheBackend,
    SQLCacheBackend,
)
from resilient_tg.fleet import AccountStatus, Fleet, FleetAdmin, FleetEvent
from resilient_tg.testing import MTProtoTestServer

from .cachetools import assert_cache_equals_server, server_history
from .conftest import wait_until
from .fleettools import (
    FLEET_INTERVAL,
    FLEET_KEEPALIVE,
    FLEET_RECONNECT,
    FLEET_TTL,
    PG_URL,
    drop_fleet_tables,
    seed_accounts,
    unique_prefix,
)
from .test_cache_redis import REDIS_URL, delete_prefix
from .test_cache_sql import drop_tables

pytestmark = pytest.mark.anyio

LIMIT = 20.0


@pytest.fixture
async def fleet_db() -> AsyncIterator[tuple[str, str]]:
    prefix = unique_prefix()
    yield PG_URL, prefix
    await drop_fleet_tables(PG_URL, prefix)


def redis_prefix() -> str:
    return f"rtgfc:{os.getpid()}:{secrets.token_hex(4)}"


@pytest.fixture(params=["redis", "postgresql"])
async def shared_cache(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    """One backend both workers use (the fleet never closes it: this fixture does)."""
    if request.param == "redis":
        prefix = redis_prefix()
        redis_backend = RedisCacheBackend(REDIS_URL, prefix=prefix)
        try:
            yield redis_backend
        finally:
            await redis_backend.aclose()
            await delete_prefix(prefix)
        return
    sql_backend = SQLCacheBackend(
        PG_URL, table_prefix=f"{unique_prefix()}c_", pool_size=2, max_overflow=2
    )
    try:
        yield sql_backend
    finally:
        try:
            await drop_tables(sql_backend)
        finally:
            await sql_backend.aclose()


def make_fleet(server: MTProtoTestServer, url: str, prefix: str, **kwargs: Any) -> Fleet:
    return Fleet(
        url,
        server.api_id,
        server.api_hash,
        table_prefix=prefix,
        lease_ttl=FLEET_TTL,
        claim_interval=FLEET_INTERVAL,
        keepalive=FLEET_KEEPALIVE,
        reconnect=FLEET_RECONNECT,
        **kwargs,
    )


def connected(fleet: Fleet) -> set[str]:
    return {n for n, c in fleet.accounts.items() if c.state.value == "connected"}


async def until(check: Callable[[], Awaitable[bool]], limit: float = LIMIT) -> None:
    """Wait for a condition kept in the backend or the server (no event announces it)."""
    with anyio.fail_after(limit):
        while not await check():  # noqa: ASYNC110 - the condition lives in a database
            await anyio.sleep(0.02)


async def caught_up(client: ResilientClient) -> None:
    """Wait until the client applied every update the server has for its account and
    its cache wrote them."""
    cache = client.cache
    assert cache is not None

    async def done() -> bool:
        state = await client.telegram(functions.updates.GetStateRequest())
        return _compat.box_pts(client.telegram, None) >= state.pts and cache._queue.idle.is_set()

    await until(done)


async def nothing_cached(backend: CacheBackend, account: str, chat_id: int) -> bool:
    """Whether the backend holds nothing of ``account`` (what a purge leaves)."""
    return (
        await backend.chats(account) == []
        and await backend.history(account, chat_id, below=None, limit=100) == []
        and (await backend.span(account, chat_id)).span is None
        and await backend.cursor(account) is None
        and await backend.entities(account, [chat_id]) == {}
        and (await backend.dialogs(account))[0] == []
    )


async def redis_keys_of(backend: CacheBackend, account: str) -> list[str]:
    assert isinstance(backend, RedisCacheBackend)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        match = f"{backend.prefix}:{account}:*"
        return sorted([k.decode() async for k in client.scan_iter(match=match)])
    finally:
        await client.aclose()


async def read_twice(client: ResilientClient, chat_id: int, account: str) -> list[str]:
    """The first read anchors the span (from Telegram), the second is served from the
    cache; both equal the server's history. Returns the texts."""
    cache = client.cache
    assert cache is not None
    await caught_up(client)
    await cache.history(chat_id, limit=50)
    answer = await cache.history(chat_id, limit=50)
    assert answer.from_cache, f"{account}: a second read went to Telegram"
    truth = await server_history(client, chat_id)
    texts = [m.message for m in answer.value]
    assert texts == [m.message for m in truth]
    return texts


async def test_caches_follow_accounts_between_workers_and_removal_purges_them(
    mtproto_server: MTProtoTestServer,
    fleet_db: tuple[str, str],
    shared_cache: CacheBackend,
) -> None:
    server = mtproto_server
    url, prefix = fleet_db
    users = await seed_accounts(server, url, prefix, 2)
    bob = server.create_user("+19990000002", "Bob")
    sent: dict[str, list[int]] = {}
    a = make_fleet(server, url, prefix, cache=shared_cache, cache_options={"per_chat": 200})
    b = make_fleet(server, url, prefix, cache=shared_cache, cache_options={"per_chat": 200})
    removals: list[FleetEvent] = []  # b released it because it was removed
    b.on_released(lambda e: removals.append(e) if "removed" in e.detail else None)
    async with b:
        async with a:
            await wait_until(lambda: len(connected(a)) == 1 and len(connected(b)) == 1, LIMIT)
            # Both accounts talk with Bob: one chat id, overlapping message ids, own texts.
            for name, user in users.items():
                sent[name] = [
                    await server.send_message(bob.id, user.id, f"{name} #{i}") for i in range(3)
                ]
            for fleet in (a, b):
                for name in fleet.accounts:
                    client = fleet.client(name)
                    assert client.cache is not None
                    assert client.cache.account == name
                    texts = await read_twice(client, bob.id, name)
                    assert texts == [f"{name} #{i}" for i in (2, 1, 0)]
            assert sent["acct-000"] == sent["acct-001"]  # the same ids in both boxes
            moving = next(iter(a.accounts))
        # a drained: while b takes `moving` over, its chat changes (live or caught up).
        user = users[moving]
        new = await server.send_message(bob.id, user.id, f"{moving} #3")
        await server.edit_message(user.id, sent[moving][0], f"{moving} #0 edited")
        await server.delete_messages(user.id, [sent[moving][1]])
        await wait_until(lambda: connected(b) == set(users), LIMIT)
        client = b.client(moving)
        await caught_up(client)
        await assert_cache_equals_server(client, [bob.id], from_cache=True)
        answer = await client.cache.history(bob.id, limit=50)  # type: ignore[union-attr]
        assert [m.message for m in answer.value] == [
            f"{moving} #3",
            f"{moving} #2",
            f"{moving} #0 edited",
        ]
        assert answer.value[0].id == new
        # Never each other's: every cached text of an account is its own.
        for name in users:
            got = await b.client(name).cache.history(bob.id, limit=50)  # type: ignore[union-attr]
            assert got.from_cache
            assert all(m.message.startswith(f"{name} ") for m in got.value)
        # Removal: the worker running it stops it, then purges its cache.
        gone = next(n for n in users if n != moving)
        async with FleetAdmin(url, table_prefix=prefix) as admin:
            await admin.remove(gone)
        await wait_until(lambda: any(e.account == gone for e in removals), LIMIT)
        assert await nothing_cached(shared_cache, gone, bob.id)
        if isinstance(shared_cache, RedisCacheBackend):
            assert await redis_keys_of(shared_cache, gone) == [
                f"{shared_cache.prefix}:{gone}:epoch"
            ]
        kept = await b.client(moving).cache.history(bob.id, limit=50)  # type: ignore[union-attr]
        assert kept.from_cache
        assert len(kept.value) == 3
    # With no worker running it, FleetAdmin.remove(cache=...) purges by itself.
    assert not await nothing_cached(shared_cache, moving, bob.id)
    async with FleetAdmin(url, table_prefix=prefix) as admin:
        await admin.remove(moving, cache=shared_cache)
    assert await nothing_cached(shared_cache, moving, bob.id)
    assert server.max_links_per_key() == 1


async def test_auth_lost_in_a_fleet_purges_the_cache_and_parks_the_account(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    server = mtproto_server
    url, prefix = fleet_db
    users = await seed_accounts(server, url, prefix, 2)
    bob = server.create_user("+19990000003", "Bob")
    backend = MemoryCacheBackend()  # one worker: the memory backend will do
    lost: list[FleetEvent] = []
    fleet = make_fleet(server, url, prefix, cache=backend)
    fleet.on_lost(lost.append)
    async with fleet:
        await wait_until(lambda: connected(fleet) == set(users), LIMIT)
        for name, user in users.items():
            await server.send_message(bob.id, user.id, f"{name} hello")
            await read_twice(fleet.client(name), bob.id, name)
            assert await backend.chats(name) == [bob.id]
        server.revoke_auth_keys(users["acct-000"].id)
        with pytest.raises(Exception, match="key is not registered"):
            await fleet.client("acct-000").telegram(functions.updates.GetStateRequest())
        await wait_until(lambda: [e.account for e in lost] == ["acct-000"], LIMIT)

        async def purged() -> bool:
            return await backend.chats("acct-000") == []

        await until(purged)
        row = next(r for r in (await fleet.db.view(FLEET_TTL)).accounts if r.name == "acct-000")
        assert row.status is AccountStatus.AUTH_LOST
        assert await backend.chats("acct-001") == [bob.id]


async def test_cache_options_are_checked_when_the_fleet_is_made(
    mtproto_server: MTProtoTestServer,
) -> None:
    server = mtproto_server
    backend = MemoryCacheBackend()
    with pytest.raises(TypeError, match="account"):
        make_fleet(server, PG_URL, "x_", cache=backend, cache_options={"account": "a"})
    with pytest.raises(TypeError, match="cache_options"):
        make_fleet(server, PG_URL, "x_", cache=backend, cache_options={"per_chats": 5})
    with pytest.raises(ValueError, match="without cache"):
        make_fleet(server, PG_URL, "x_", cache_options={"per_chat": 5})
    with pytest.raises(TypeError, match="CacheBackend"):
        make_fleet(server, PG_URL, "x_", cache=object())
