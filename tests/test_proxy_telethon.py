"""FaultProxy between a raw Telethon client and the test server: each fault is felt."""

from __future__ import annotations

import asyncio
import time

import pytest
from telethon import errors
from telethon.tl import functions

from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .conftest import STEP_TIMEOUT, login, telethon_client, wait_until

pytestmark = pytest.mark.anyio


async def get_state(client: object) -> object:
    return await client(functions.updates.GetStateRequest())  # type: ignore[operator]


async def test_reset_makes_telethon_reconnect_on_a_new_link(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    user = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server, port=fault_proxy.port, retry_delay=0.05) as client:
        await login(client, mtproto_server, user)
        assert fault_proxy.links_total == 1
        fault_proxy.reset()
        await wait_until(lambda: fault_proxy.links_total == 2)
        await asyncio.wait_for(get_state(client), STEP_TIMEOUT)
        assert fault_proxy.links_open == 1


async def test_refuse_fails_new_connects_until_it_ends(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    fault_proxy.refuse(60)
    with pytest.raises(ConnectionError):
        async with telethon_client(
            mtproto_server, port=fault_proxy.port, connection_retries=0, retry_delay=0
        ):
            pass
    fault_proxy.heal()
    async with telethon_client(mtproto_server, port=fault_proxy.port) as client:
        assert await client.is_user_authorized() is False


async def test_blackhole_stalls_requests_and_heal_lets_them_finish(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    user = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server, port=fault_proxy.port, retry_delay=0.05) as client:
        await login(client, mtproto_server, user)
        fault_proxy.blackhole()
        pending = asyncio.ensure_future(get_state(client))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done, "a request went through a blackhole"
        assert fault_proxy.links_open == 1  # the link looks alive: that is the trap
        fault_proxy.heal()
        # The link lost bytes, so heal() resets it; Telethon reconnects and re-sends.
        state = await asyncio.wait_for(pending, STEP_TIMEOUT)
        assert state.pts >= 1
        assert fault_proxy.bytes_dropped > 0


async def test_cut_after_closes_the_link_mid_frame(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    user = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server, port=fault_proxy.port, retry_delay=0.05) as client:
        await login(client, mtproto_server, user)
        links = fault_proxy.links_total
        fault_proxy.cut_after(10)  # less than any MTProto packet
        pending = asyncio.ensure_future(get_state(client))
        await wait_until(lambda: fault_proxy.links_total > links)
        fault_proxy.heal()
        assert (await asyncio.wait_for(pending, STEP_TIMEOUT)).pts >= 1


async def test_latency_delays_every_round_trip(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    user = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server, port=fault_proxy.port) as client:
        await login(client, mtproto_server, user)
        fault_proxy.latency(0.2)
        started = time.monotonic()
        await get_state(client)
        assert time.monotonic() - started >= 0.4  # 0.2 s each way
        fault_proxy.heal()


async def test_flood_wait_through_the_proxy_is_still_a_flood_wait(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    user = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server, port=fault_proxy.port) as client:
        await login(client, mtproto_server, user)
        mtproto_server.inject_rpc_error("updates.getState", "FLOOD_WAIT_7")
        with pytest.raises(errors.FloodWaitError) as info:
            await get_state(client)
        assert info.value.seconds == 7
