"""The client on a server with several DCs: health names the home DC, the supervisor
owns Telethon's DC switch at login, and exported senders (downloads from other DCs)
never move the main link's state."""

from __future__ import annotations

import json

import pytest

from resilient_tg.testing import MTProtoTestServer

from .clienttools import empty_store, log_in, running

pytestmark = pytest.mark.anyio


async def test_health_names_the_home_dc(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with running(empty_store(mtproto_server), mtproto_server) as (client, rec):
        assert client.health().dc_id == mtproto_server.dc_id  # known from the store at once
        await client.wait_connected(10)
        await log_in(client, mtproto_server, alice)
        await rec.until(lambda: client.health().healthy)
        health = client.health()
        assert health.dc_id == mtproto_server.dc_id
        shown = health.to_dict()
        assert shown["dc_id"] == mtproto_server.dc_id
        json.dumps(shown)
