"""The aiohttp gateway example: /health follows the MTProto link, not the HTTP server."""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from telethon import utils
from telethon.tl import types

from resilient_tg import ResilientClient
from resilient_tg.cache import CacheBackend, MemoryCacheBackend
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from . import test_cache_redis, test_cache_sql
from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, Recorder, seeded_store
from .conftest import STEP_TIMEOUT
from .test_client_faults import until_left_connected

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gateway_aiohttp.py"
# Scheduling slack on a loaded CI machine, on top of interval + timeout.
MARGIN = 1.0
KEEP = 3  # recent messages the gateway keeps


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gateway_aiohttp", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gateway = load_example()


class Gateway:
    """The example app served on a free port, and an HTTP client for it."""

    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = http

    async def get(self, path: str) -> tuple[int, Any]:
        status, _, body = await self.fetch(path)
        return status, body

    async def fetch(self, path: str) -> tuple[int, Any, Any]:
        """(status, headers, body: JSON decoded when it is JSON)."""
        async with self.http.get(self.base + path) as response:
            if response.content_type == "application/json":
                return response.status, response.headers, await response.json()
            return response.status, response.headers, await response.text()

    async def until_status(self, path: str, status: int, limit: float = STEP_TIMEOUT) -> float:
        """Poll ``path`` until it answers ``status``; returns when (monotonic)."""
        with anyio.fail_after(limit):
            while (await self.get(path))[0] != status:  # noqa: ASYNC110 - HTTP polling
                await anyio.sleep(0.02)
        return time.monotonic()

    async def until_texts(self, texts: list[str], limit: float = STEP_TIMEOUT) -> list[Any]:
        with anyio.fail_after(limit):
            while True:
                _, recent = await self.get("/messages")
                if all(any(m["text"] == t for m in recent) for t in texts):
                    return list(recent)
                await anyio.sleep(0.02)


def gateway_client(server: MTProtoTestServer, port: int, user: Any) -> ResilientClient:
    return ResilientClient(
        seeded_store(server, port, user=user),
        server.api_id,
        server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
    )


@contextlib.asynccontextmanager
async def serving(client: ResilientClient, **options: Any) -> AsyncIterator[Gateway]:
    """The example app for ``client`` on a free port (the app enters the client)."""
    runner = web.AppRunner(gateway.make_app(client, keep=KEEP, **options))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield Gateway(f"http://127.0.0.1:{port}", http)
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> AsyncIterator[tuple[Gateway, Any, Any]]:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    async with serving(gateway_client(mtproto_server, fault_proxy.port, alice)) as gw:
        yield gw, alice, bob


async def test_health_is_503_within_interval_plus_timeout_of_a_blackhole_200_after_heal(
    served: tuple[Gateway, Any, Any], fault_proxy: FaultProxy
) -> None:
    gw, _, _ = served
    await gw.until_status("/health", 200)
    status, body = await gw.get("/health")
    assert status == 200
    assert body["healthy"] is True
    assert body["state"] == "connected"

    start = time.monotonic()
    fault_proxy.blackhole()
    bound = FAST_KEEPALIVE.interval + FAST_KEEPALIVE.timeout + MARGIN
    unhealthy_at = await gw.until_status("/health", 503, limit=bound + 5)
    assert unhealthy_at - start <= bound, f"503 after {unhealthy_at - start:.2f}s > {bound}s"
    status, body = await gw.get("/health")
    assert status == 503
    assert body["healthy"] is False
    status, body = await gw.get("/live")  # the process is fine: no restart wanted
    assert status == 200, body

    fault_proxy.heal()
    await gw.until_status("/health", 200)
    _, body = await gw.get("/health")
    assert body["reconnects_total"] >= 1


async def test_messages_lists_what_a_second_user_sent_during_an_outage_too(
    served: tuple[Gateway, Any, Any], mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    gw, alice, bob = served
    await gw.until_status("/health", 200)
    await mtproto_server.send_message(bob.id, alice.id, "before")
    await gw.until_texts(["before"])

    fault_proxy.blackhole()
    await gw.until_status("/health", 503)
    await mtproto_server.send_message(bob.id, alice.id, "while down")  # fetched by catch-up
    fault_proxy.heal()
    recent = await gw.until_texts(["before", "while down"])

    texts = [m["text"] for m in recent]
    assert texts.count("before") == texts.count("while down") == 1
    last = recent[-1]
    assert last["sender_id"] == bob.id
    assert last["chat_id"] == bob.id
    assert isinstance(last["message_id"], int)

    late = [f"late #{i}" for i in range(KEEP)]
    for text in late:
        await mtproto_server.send_message(bob.id, alice.id, text)
    recent = await gw.until_texts(late)
    assert [m["text"] for m in recent] == late  # bounded: the oldest are gone


async def test_metrics_serves_resilient_tg_series(served: tuple[Gateway, Any, Any]) -> None:
    gw, _, _ = served
    await gw.until_status("/health", 200)
    async with gw.http.get(gw.base + "/metrics") as response:
        text = await response.text()
        assert response.status == 200, text
        assert response.headers["Content-Type"].startswith("text/plain")
    assert "resilient_tg_" in text


# GET /chats/{id}/messages: the MessageCache -----------------------------------------


@pytest.fixture(params=["memory", "postgresql", "redis"])
async def cache_backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    """The backend ``--cache`` makes of each kind of URL: PostgreSQL in tables of its own
    (dropped after), Redis under a key prefix of its own (deleted after)."""
    kind = request.param
    if kind == "memory":
        backend = gateway.cache_backend("memory")
        assert isinstance(backend, MemoryCacheBackend)
        yield backend
    elif kind == "postgresql":
        prefix = test_cache_sql.unique_prefix()
        backend = gateway.cache_backend(f"{test_cache_sql.PG_URL}?table_prefix={prefix}")
        try:
            yield backend
        finally:
            try:
                await test_cache_sql.drop_tables(backend)  # type: ignore[arg-type]
            finally:
                await backend.aclose()
    else:
        prefix = test_cache_redis.unique_prefix()
        backend = gateway.cache_backend(test_cache_redis.REDIS_URL, prefix=prefix)
        try:
            yield backend
        finally:
            await backend.aclose()
            await test_cache_redis.delete_prefix(prefix)


def texts_of(body: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in body]


async def test_chat_messages_come_from_telegram_once_then_from_the_cache_without_a_request(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, cache_backend: CacheBackend
) -> None:
    server = mtproto_server
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    client = gateway_client(server, fault_proxy.port, alice)
    async with serving(client, cache=cache_backend) as gw:
        assert client.cache is not None
        assert client.cache.backend is cache_backend
        await gw.until_status("/health", 200)
        sent = ["one", "two", "three"]
        for text in sent:
            await server.send_message(bob.id, alice.id, text)
        await gw.until_texts(sent)  # the client has them (its handler ran)
        path = f"/chats/{bob.id}/messages"

        status, headers, body = await gw.fetch(f"{path}?limit=2")
        assert status == 200, body
        assert headers["X-Resilient-Source"] == "telegram"
        assert "X-Resilient-Stale" not in headers
        assert abs(float(headers["X-Resilient-As-Of"]) - time.time()) < 60
        assert texts_of(body) == ["three", "two"]
        newest = body[0]
        assert set(newest) == {"id", "date", "text", "out", "edit_date", "sender_id"}
        assert newest["out"] is False
        assert newest["edit_date"] is None
        assert newest["sender_id"] == bob.id
        assert newest["date"].endswith("+00:00")

        server.clear_requests()
        status, headers, body = await gw.fetch(f"{path}?limit=3")
        assert status == 200, body
        assert headers["X-Resilient-Source"] == "cache"
        assert texts_of(body) == ["three", "two", "one"]
        status, headers, body = await gw.fetch(f"{path}?limit=5&offset_id={newest['id']}")
        assert headers["X-Resilient-Source"] == "cache"
        assert texts_of(body) == ["two", "one"]
        assert [r.method for r in server.requests] == []  # no request reached the server

        await server.send_message(bob.id, alice.id, "four")
        await gw.until_texts(["four"])
        status, headers, body = await gw.fetch(f"{path}?limit=2")
        assert headers["X-Resilient-Source"] == "cache"
        assert texts_of(body) == ["four", "three"]
        assert server.requests_for("messages.getHistory") == []


async def test_chat_messages_while_down_are_stale_and_refused_when_fresh_is_asked(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    server = mtproto_server
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    client = gateway_client(server, fault_proxy.port, alice)
    rec = Recorder(client)
    async with serving(client) as gw:
        await gw.until_status("/health", 200)
        await server.send_message(bob.id, alice.id, "kept")
        await gw.until_texts(["kept"])
        path = f"/chats/{bob.id}/messages?limit=5"
        status, headers, body = await gw.fetch(path)
        assert headers["X-Resilient-Source"] == "telegram"
        current_at = float(headers["X-Resilient-As-Of"])

        fault_proxy.refuse(3600)  # every reconnect refused, until heal
        fault_proxy.reset()
        await until_left_connected(rec)
        status, headers, body = await gw.fetch(path)
        assert status == 200, body
        assert headers["X-Resilient-Source"] == "cache"
        assert headers["X-Resilient-Stale"] == "1"
        assert "X-Resilient-Complete" not in headers  # the span proves it whole
        assert current_at <= float(headers["X-Resilient-As-Of"]) <= time.time()
        assert texts_of(body) == ["kept"]
        status, headers, body = await gw.fetch(path + "&fresh=1")
        assert status == 503, body
        assert body["state"] != "connected"
        assert current_at <= body["as_of"] <= time.time()

        fault_proxy.heal()
        await client.wait_connected(STEP_TIMEOUT)
        status, headers, body = await gw.fetch(path + "&fresh=1")
        assert status == 200, body
        assert "X-Resilient-Stale" not in headers
        assert texts_of(body) == ["kept"]


async def test_chat_messages_rejects_bad_parameters_and_unknown_chats(
    served: tuple[Gateway, Any, Any],
) -> None:
    gw, _, _ = served
    await gw.until_status("/health", 200)
    for query in ("limit=0", "limit=101", "limit=x", "offset_id=-1"):
        status, body = await gw.get(f"/chats/1/messages?{query}")
        assert status == 400, (query, body)
    status, body = await gw.get("/chats/x/messages")
    assert status == 400, body
    status, body = await gw.get("/chats/987654321/messages")  # no such peer for Alice
    assert status == 404, body


async def test_the_cache_backend_comes_from_the_command_line_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert gateway.parse_args(["--test-server"]).cache == "memory"
    monkeypatch.setenv("GATEWAY_CACHE", "redis://cache:6379/1")
    monkeypatch.setenv("GATEWAY_CACHE_PREFIX", "gw1")
    args = gateway.parse_args(["--test-server"])
    assert (args.cache, args.cache_prefix) == ("redis://cache:6379/1", "gw1")
    args = gateway.parse_args(["--test-server", "--cache", "sqlite:///tmp/gw.db"])
    assert args.cache == "sqlite:///tmp/gw.db"
    redis = gateway.cache_backend("redis://:pw@cache:6379/1", prefix="gw1")
    sql = gateway.cache_backend("postgresql://app:pw@db/chat")
    try:  # neither connects before its first use
        assert redis.describe() == "redis://cache:6379/1#gw1"
        assert type(sql).__name__ == "SQLCacheBackend"
        assert "pw" not in sql.describe()
    finally:
        await redis.aclose()
        await sql.aclose()


async def test_chat_messages_of_a_basic_group_and_a_supergroup_by_their_marked_ids(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    server = mtproto_server
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    group = server.create_group(bob.id, "Group", [alice.id])
    room = server.create_channel(bob.id, "Room", megagroup=True, members=[alice.id])
    chats = {
        int(utils.get_peer_id(types.PeerChat(group.id))): group.id,
        int(utils.get_peer_id(types.PeerChannel(room.id))): room.id,
    }
    client = gateway_client(server, fault_proxy.port, alice)
    rec = Recorder(client)
    async with serving(client) as gw:
        rec.watch_messages()
        await gw.until_status("/health", 200)
        for marked, chat in chats.items():
            await server.post(chat, bob.id, f"first in {marked}")
            await rec.all_messages([f"first in {marked}"])
            path = f"/chats/{marked}/messages?limit=5"
            status, headers, body = await gw.fetch(path)
            assert status == 200, body
            assert headers["X-Resilient-Source"] == "telegram"
            assert texts_of(body)[0] == f"first in {marked}"
            await server.post(chat, bob.id, f"second in {marked}")
            await rec.all_messages([f"second in {marked}"])
            server.clear_requests()
            status, headers, body = await gw.fetch(path)
            assert headers["X-Resilient-Source"] == "cache"
            assert texts_of(body)[:2] == [f"second in {marked}", f"first in {marked}"]
            assert server.requests_for("messages.getHistory") == []
