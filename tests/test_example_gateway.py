"""The aiohttp gateway example: /health follows the MTProto link, not the HTTP server."""

from __future__ import annotations

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

from resilient_tg import ResilientClient
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, seeded_store
from .conftest import STEP_TIMEOUT

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
        async with self.http.get(self.base + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

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


@pytest.fixture
async def served(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> AsyncIterator[tuple[Gateway, Any, Any]]:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    client = ResilientClient(
        seeded_store(mtproto_server, fault_proxy.port, user=alice),
        mtproto_server.api_id,
        mtproto_server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
    )
    runner = web.AppRunner(gateway.make_app(client, keep=KEEP))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield Gateway(f"http://127.0.0.1:{port}", http), alice, bob
    finally:
        await runner.cleanup()


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
