"""Links reset before the server even looks at them never take it down."""

from __future__ import annotations

import socket
import struct

import anyio
import pytest
from telethon.errors import InvalidBufferError

from resilient_tg.testing import MTProtoTestServer

from .conftest import login, telethon_client

pytestmark = pytest.mark.anyio


def _connect_and_reset(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    # SO_LINGER 0: close() sends RST at once, often before the server's accept finishes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_storm_of_reset_links_leaves_the_server_serving(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server) as client:
        await login(client, mtproto_server, alice)
        for _ in range(300):
            await anyio.to_thread.run_sync(_connect_and_reset, mtproto_server.port)
        me = await client.get_me()
        assert me.id == alice.id
    async with telethon_client(mtproto_server) as late:
        assert await late.is_user_authorized() is False


async def test_a_transport_flood_ends_a_full_transport_link_as_telethon_expects_it(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with telethon_client(mtproto_server) as client:
        await login(client, mtproto_server, alice)
        (link,) = mtproto_server.connections
        assert link.auth_key_id is not None
        assert mtproto_server.send_transport_error(auth_key_id=link.auth_key_id ^ 1) == 0
        with pytest.raises(ValueError, match="negative transport error code"):
            mtproto_server.send_transport_error(429)
        assert mtproto_server.send_transport_error(-429, auth_key_id=link.auth_key_id) == 1
        with anyio.fail_after(10):
            # Unframed on the full transport: Telethon gives the link up with the code.
            with pytest.raises(InvalidBufferError) as ended:
                await client.disconnected
        assert ended.value.code == 429
