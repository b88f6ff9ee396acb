"""The server's record of links per auth key: open now, and the most ever at once.

Real Telethon clients (and raw MTProto frames where the DH exchange must be watched)
against the real server; the record is what fleet tests use to prove that two
processes never used one auth key together.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession, StringSession
from telethon.tl import functions

from resilient_tg import ConnectionState
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, KeyLinkCount, MTProtoTestServer

from .clienttools import running
from .conftest import telethon_client, wait_until
from .rawmtproto import RawLink, Session, create_auth_key

pytestmark = pytest.mark.anyio


def _key_id(key: bytes) -> int:
    """The 64-bit id Telethon computes for a key, as the server reports it."""
    key_id: int = AuthKey(key).key_id
    return key_id


def _session_with_key(server: MTProtoTestServer, key: bytes, port: int | None = None) -> str:
    """A saved Telethon session holding ``key``: load it twice to share the key."""
    session = MemorySession()
    session.set_dc(server.dc_id, server.host, port or server.port)
    session.auth_key = AuthKey(key)
    return StringSession.save(session)  # type: ignore[arg-type]


async def test_one_client_counts_one_link_for_the_key_it_made(
    mtproto_server: MTProtoTestServer,
) -> None:
    assert mtproto_server.max_links_per_key() == 0
    async with telethon_client(mtproto_server) as client:
        await client(functions.help.GetConfigRequest())
        key_id = client.session.auth_key.key_id
        assert mtproto_server.open_links(key_id) == 1
        assert mtproto_server.link_counts() == {
            key_id: KeyLinkCount(
                auth_key_id=key_id,
                open=1,
                max_open=1,
                max_open_at=mtproto_server.link_counts()[key_id].max_open_at,
            )
        }
        assert mtproto_server.max_links_per_key() == 1
    await wait_until(lambda: mtproto_server.open_links(key_id) == 0)
    assert mtproto_server.link_counts()[key_id].max_open == 1


async def test_two_clients_sharing_a_key_count_two_while_another_key_counts_one(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    shared_key = mtproto_server.issue_auth_key(alice.id)
    bob_key = mtproto_server.issue_auth_key(bob.id)
    saved = _session_with_key(mtproto_server, shared_key)
    shared, other = _key_id(shared_key), _key_id(bob_key)
    before = time.time()
    async with (
        telethon_client(mtproto_server, session=StringSession(saved)) as first,
        telethon_client(mtproto_server, session=StringSession(saved)) as second,
        telethon_client(
            mtproto_server, session=StringSession(_session_with_key(mtproto_server, bob_key))
        ) as third,
    ):
        for client, user in ((first, alice), (second, alice), (third, bob)):
            me = await client.get_me()
            assert me.id == user.id
        assert mtproto_server.open_links(shared) == 2
        assert mtproto_server.open_links(other) == 1
        assert mtproto_server.max_links_per_key() == 2
        counts = mtproto_server.link_counts()
        assert counts[shared].max_open == 2
        assert counts[other].max_open == 1
        assert before <= counts[shared].max_open_at <= time.time()
    # Disconnecting closes both links; the most-at-once stays on record.
    await wait_until(lambda: mtproto_server.open_links(shared) == 0)
    await wait_until(lambda: mtproto_server.open_links(other) == 0)
    counts = mtproto_server.link_counts()
    assert (counts[shared].open, counts[shared].max_open) == (0, 2)
    assert (counts[other].open, counts[other].max_open) == (0, 1)
    assert mtproto_server.max_links_per_key() == 2


async def test_reset_link_record_starts_again_from_the_links_open_now(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    saved, key_id = _session_with_key(mtproto_server, key), _key_id(key)
    async with telethon_client(mtproto_server, session=StringSession(saved)) as staying:
        await staying.get_me()
        async with telethon_client(mtproto_server, session=StringSession(saved)) as leaving:
            await leaving.get_me()
            assert mtproto_server.max_links_per_key() == 2
        await wait_until(lambda: mtproto_server.open_links(key_id) == 1)
        mtproto_server.reset_link_record()
        assert mtproto_server.max_links_per_key() == 1
        assert mtproto_server.link_counts()[key_id].open == 1
    await wait_until(lambda: mtproto_server.open_links(key_id) == 0)
    mtproto_server.reset_link_record()
    assert mtproto_server.link_counts() == {}
    assert mtproto_server.max_links_per_key() == 0


async def test_a_link_counts_for_a_key_once_a_message_is_decrypted_and_follows_a_new_key(
    mtproto_server: MTProtoTestServer,
) -> None:
    """The DH exchange attributes nothing; a second exchange on the same link moves it."""
    link = await RawLink.open(mtproto_server.host, mtproto_server.port)
    async with link.stream:
        first = await create_auth_key(link, mtproto_server.public_key_pem)
        assert len(mtproto_server.connections) == 1
        assert mtproto_server.link_counts() == {}  # a key exists, but no message used it
        first_id = _key_id(first.key)
        await Session(link, first.key, first.salt).call(functions.PingRequest(ping_id=1))
        assert mtproto_server.open_links(first_id) == 1

        second = await create_auth_key(link, mtproto_server.public_key_pem)
        second_id = _key_id(second.key)
        assert mtproto_server.open_links(first_id) == 1  # not moved until a message is
        await Session(link, second.key, second.salt).call(functions.PingRequest(ping_id=2))
        assert mtproto_server.open_links(first_id) == 0
        assert mtproto_server.open_links(second_id) == 1
        assert [c.auth_key_id for c in mtproto_server.connections] == [second_id]
        assert mtproto_server.max_links_per_key() == 1
    await wait_until(lambda: mtproto_server.open_links(second_id) == 0)
    assert mtproto_server.link_counts()[first_id].max_open == 1


async def test_restart_closes_every_link_and_the_record_outlives_it(tmp_path: Path) -> None:
    async with MTProtoTestServer(data_dir=tmp_path) as server:
        alice = server.create_user("+15550001", "Alice")
        key = server.issue_auth_key(alice.id)
        key_id = _key_id(key)
        async with telethon_client(
            server, session=StringSession(_session_with_key(server, key)), retry_delay=0.05
        ) as client:
            await client.get_me()
            assert server.open_links(key_id) == 1
            await server.restart()
            # restart() returns once every link's task has ended.
            assert server.open_links(key_id) == 0
            assert server.link_counts()[key_id].max_open == 1
            me = await client.get_me()  # Telethon reconnects; the key survived (data_dir)
            assert me.id == alice.id
            assert server.open_links(key_id) == 1
            assert server.max_links_per_key() == 1


async def test_resilient_client_reconnecting_after_resets_never_has_two_links(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """What is guaranteed, and why: FaultProxy.reset() closes both of a link's sockets
    with SO_LINGER 0, so the server's socket holds the RST before reset() returns, and
    the server's next turn of the event loop ends that link. A new link needs several
    turns (the client's reconnect, the proxy's accept and upstream connect, the server's
    accept, a request forwarded) before it carries a decrypted message. A link that dies
    silently (a blackhole, a killed host) stays open on the server until its ping
    deadline; that case is the fleet's lease to cover, not this test's."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    key_id = _key_id(key)
    store = MemoryStore(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=fault_proxy.host,
            port=fault_proxy.port,
            auth_key=key,
        )
    )
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected()
        assert mtproto_server.open_links(key_id) == 1
        for _ in range(5):
            connected = rec.states().count(ConnectionState.CONNECTED)
            links = mtproto_server.links_total
            fault_proxy.reset()
            await rec.until(lambda n=connected: rec.states().count(ConnectionState.CONNECTED) > n)
            assert mtproto_server.links_total > links  # it came back over a new link
            assert mtproto_server.open_links(key_id) == 1
        assert mtproto_server.link_counts()[key_id].max_open == 1


async def test_telethon_reconnecting_at_once_after_resets_never_has_two_links(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Raw Telethon reconnects with no delay: the tightest race the reset allows."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    key_id = _key_id(key)
    saved = _session_with_key(mtproto_server, key, port=fault_proxy.port)
    async with telethon_client(
        mtproto_server, session=StringSession(saved), retry_delay=0
    ) as client:
        await client.get_me()
        for _ in range(5):
            links = mtproto_server.links_total
            fault_proxy.reset()
            await wait_until(lambda n=links: mtproto_server.links_total > n)
            me = await client.get_me()  # answered over the new link
            assert me.id == alice.id
            assert mtproto_server.open_links(key_id) == 1
    assert mtproto_server.link_counts()[key_id].max_open == 1
