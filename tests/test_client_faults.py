"""The fault matrix: every fault, while idle, during requests and during a burst of
incoming messages. After each: CONNECTED and healthy, every message the server sent
received exactly once, no message stored twice, no request left hanging."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from telethon.tl import types

from resilient_tg import ConnectionState, NotConnectedError, ResultLostError, ResultUnknownError
from resilient_tg.testing import FaultProxy, MTProtoTestServer, TestUser

from .clienttools import FAST_KEEPALIVE, Recorder, running, seeded_store

pytestmark = pytest.mark.anyio

S = ConnectionState
REQUEST_TIMEOUT = 8.0


class World:
    def __init__(self, server: MTProtoTestServer, proxy: FaultProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.alice = server.create_user("+15550001", "Alice")
        self.bob = server.create_user("+15550002", "Bob")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        MTProtoTestServer(data_dir=tmp_path / "server") as server,
        FaultProxy(server.host, server.port) as proxy,
    ):
        yield World(server, proxy)


async def until_left_connected(rec: Recorder) -> None:
    await rec.until(lambda: any(c.old is S.CONNECTED for c in rec.changes), limit=10)


async def fault_reset(w: World, rec: Recorder) -> None:
    w.proxy.reset()
    await until_left_connected(rec)


async def fault_refuse(w: World, rec: Recorder) -> None:
    w.proxy.refuse(1.0)
    w.proxy.reset()
    await until_left_connected(rec)


async def fault_blackhole(w: World, rec: Recorder) -> None:
    w.proxy.blackhole()
    await until_left_connected(rec)  # found by the keepalive
    w.proxy.heal()


async def fault_latency_spike(w: World, rec: Recorder) -> None:
    # Round trips of 0.8 s against a 0.5 s keepalive timeout: the link is declared dead.
    w.proxy.latency(0.4)
    await until_left_connected(rec)
    await asyncio.sleep(0.5)
    w.proxy.heal()


async def fault_cut_mid_frame(w: World, rec: Recorder) -> None:
    w.proxy.cut_after(37)
    await until_left_connected(rec)
    w.proxy.heal()


async def fault_server_restart(w: World, rec: Recorder) -> None:
    await w.server.restart()  # state kept (data_dir): same keys, same messages
    await until_left_connected(rec)


async def fault_flood_wait_on_reconnect(w: World, rec: Recorder) -> None:
    w.server.inject_rpc_error("updates.getState", "FLOOD_WAIT_1")
    w.proxy.reset()
    await until_left_connected(rec)


async def fault_500_on_reconnect(w: World, rec: Recorder) -> None:
    w.server.inject_rpc_error("updates.getState", "INTERNAL", times=3)
    w.proxy.reset()
    await until_left_connected(rec)


FAULTS: dict[str, Callable[[World, Recorder], Awaitable[None]]] = {
    "reset": fault_reset,
    "refuse": fault_refuse,
    "blackhole": fault_blackhole,
    "latency_spike": fault_latency_spike,
    "cut_mid_frame": fault_cut_mid_frame,
    "server_restart": fault_server_restart,
    "flood_wait_on_reconnect": fault_flood_wait_on_reconnect,
    "500_on_reconnect": fault_500_on_reconnect,
}


async def send_burst(w: World, texts: list[str], n: int, label: str) -> None:
    for i in range(n):
        text = f"{label} {i}"
        await w.server.send_message(w.bob.id, w.alice.id, text)
        texts.append(text)
        await asyncio.sleep(0.02)


def stored_texts(w: World, owner: TestUser) -> collections.Counter[str]:
    account = w.server._world.accounts[owner.id]
    return collections.Counter(m.text for m in account.box if m.out)


@pytest.mark.parametrize("phase", ["idle", "request", "burst"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_matrix(world: World, fault: str, phase: str) -> None:
    w = world
    store = seeded_store(w.server, w.proxy.port, user=w.alice)
    sent: list[str] = []
    async with running(
        store, w.server, keepalive=FAST_KEEPALIVE, request_timeout=REQUEST_TIMEOUT
    ) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await rec.until(lambda: client.health().healthy)
        peer = types.InputPeerUser(w.bob.id, w.bob.access_hash)
        requests: list[asyncio.Task[Any]] = []
        burst: asyncio.Task[None] | None = None
        if phase == "request":
            for i in range(3):
                requests.append(
                    asyncio.ensure_future(client.telegram.send_message(peer, f"req {i}"))
                )
            requests.append(asyncio.ensure_future(client.telegram.get_me()))
        elif phase == "burst":
            burst = asyncio.ensure_future(send_burst(w, sent, 20, "burst"))

        await FAULTS[fault](w, rec)

        if burst is not None:
            await asyncio.wait_for(burst, 20)
        # Recovery: connected again, and healthy (a pong within interval + timeout).
        await client.wait_connected(15)
        await rec.until(lambda: client.health().healthy, limit=10)
        # New traffic after the fault arrives too.
        await send_burst(w, sent, 3, "after")
        await rec.all_messages(sent, limit=15)

        # No request hangs: each finished within request_timeout (+ margin).
        if requests:
            done, pending = await asyncio.wait(requests, timeout=REQUEST_TIMEOUT + 5)
            assert not pending, "a request was left hanging"
            for task in done:
                exc = task.exception()
                assert exc is None or isinstance(
                    exc, (NotConnectedError, ResultLostError, ResultUnknownError)
                ), exc
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one

    assert client.state is S.CLOSED
    # Every message the server sent was received exactly once.
    assert {t: rec.messages[t] for t in sent} == dict.fromkeys(sent, 1)
    assert sum(rec.messages.values()) == len(sent)
    # No send was executed twice on the server.
    assert all(count == 1 for count in stored_texts(w, w.alice).values())
    # The link really went down and came back (the fault was felt).
    if fault != "server_restart" or phase != "idle":
        assert S.RECONNECTING in rec.states() or S.CONNECTING in rec.states()[1:]
    assert rec.states()[-2:] == [S.CONNECTED, S.CLOSED]
