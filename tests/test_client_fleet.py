"""Many clients, one outage: jitter spreads the comeback; catch-up loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from resilient_tg import ConnectionState, KeepalivePolicy, ReconnectPolicy, ResilientClient
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, running, seeded_store

pytestmark = pytest.mark.anyio

FLEET = 100


# It measures when 100 clients of one event loop make their attempts: a heavy test on the
# other xdist worker (a loaded run once bunched 28 of them into 100 ms) is kept out.
@pytest.mark.exclusive
async def test_jitter_spreads_a_fleet_reconnecting_after_a_shared_outage(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    # A spread of 3 s (not the default 0.5 s): on a busy machine the event loop of 100
    # clients stalls for a few hundred ms after the reset, and attempts that fall due
    # during a stall run together when it ends. The behaviour under test is the spread.
    reconnect = ReconnectPolicy(initial_delay=3.0, max_delay=6.0, connect_timeout=5.0)
    keepalive = KeepalivePolicy(interval=5.0, timeout=5.0)
    first_attempt: dict[int, float] = {}
    outage_started = 0.0
    async with contextlib.AsyncExitStack() as stack:
        clients: list[ResilientClient] = []
        for i in range(FLEET):
            user = mtproto_server.create_user(f"+1555{i:07d}", f"User{i}")
            client = ResilientClient(
                seeded_store(mtproto_server, fault_proxy.port, user=user),
                mtproto_server.api_id,
                mtproto_server.api_hash,
                reconnect=reconnect,
                keepalive=keepalive,
                shutdown_timeout=5.0,
            )

            def note(change: object, i: int = i) -> None:
                first_attempt.setdefault(i, time.monotonic() - outage_started)

            client.on_reconnecting(note)
            clients.append(await stack.enter_async_context(client))
        await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 60)

        outage_started = time.monotonic()
        fault_proxy.reset()  # every link drops at the same instant
        await asyncio.wait_for(_all_noted(first_attempt), 20)
        await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 60)

    times = sorted(first_attempt.values())
    assert len(times) == FLEET
    # Full jitter: the first attempts spread over [0, initial_delay] instead of a
    # thundering herd. No 100 ms window may hold a quarter of the fleet (uniform: ~3%).
    busiest = max(sum(1 for t in times if start <= t < start + 0.1) for start in times)
    assert busiest <= FLEET // 4, f"{busiest} of {FLEET} attempts within 100 ms"
    assert times[-1] - times[0] >= 0.5


async def _all_noted(first_attempt: dict[int, float]) -> None:
    while len(first_attempt) < FLEET:  # noqa: ASYNC110 - filled by 100 callbacks
        await asyncio.sleep(0.05)


async def test_messages_arriving_during_catch_up_are_delivered_once(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """150 messages missed while away (a sliced getDifference), and live ones sent while the
    client is fetching them: every one arrives, once."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    sent: list[str] = []
    async with running(store, mtproto_server, keepalive=FAST_KEEPALIVE) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        fault_proxy.refuse(float("inf"))
        fault_proxy.reset()
        await rec.until(lambda: client.state is not ConnectionState.CONNECTED)
        for i in range(150):
            text = f"missed {i}"
            await mtproto_server.send_message(bob.id, alice.id, text)
            sent.append(text)
        fault_proxy.heal()

        async def live() -> None:
            for i in range(30):
                text = f"live {i}"
                await mtproto_server.send_message(bob.id, alice.id, text)
                sent.append(text)
                await asyncio.sleep(0.01)

        feeder = asyncio.ensure_future(live())
        await rec.until(lambda: client.state is ConnectionState.CATCHING_UP, limit=10)
        await client.wait_connected(15)
        await asyncio.wait_for(feeder, 10)
        await rec.all_messages(sent, limit=15)
        await asyncio.sleep(0.3)
    assert {t: rec.messages[t] for t in sent} == dict.fromkeys(sent, 1)
    assert len(rec.message_order) == len(sent)
