"""What a ResilientClient writes back to its store: only what it learned. A client that
never connected leaves the update state as it found it; whether a key was ever logged
in is persisted, so a revoked imported session is lost, never taken for a fresh one."""

from __future__ import annotations

import math
from pathlib import Path

import anyio.to_thread
import pytest
from telethon import errors
from telethon.crypto import AuthKey
from telethon.sessions import StringSession

from resilient_tg import ConnectionState, StateReason
from resilient_tg.cli import main
from resilient_tg.stores import EnvStringStore, FileStore, MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import running, seeded_store

pytestmark = pytest.mark.anyio

S = ConnectionState
VAR = "RTG_TEST_AUTHSTATE_SESSION"


def string_session(server: MTProtoTestServer, key: bytes) -> str:
    session = StringSession()
    session.set_dc(server.dc_id, server.host, server.port)
    session.auth_key = AuthKey(key)
    text: str = session.save()
    return text


async def test_a_client_that_never_connected_keeps_the_stored_update_state(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Started and left while the server is unreachable, the client writes back exactly
    the update state it loaded, so the next start delivers what was sent meanwhile."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    key = mtproto_server.issue_auth_key(alice.id)
    store = MemoryStore(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=fault_proxy.host,
            port=fault_proxy.port,
            auth_key=key,
            ever_authorized=True,
        )
    )
    async with running(store, mtproto_server) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await mtproto_server.send_message(bob.id, alice.id, "before")
        await rec.all_messages(["before"])
    known = await store.load()
    assert known is not None
    assert known.update_state is not None
    assert known.update_state.pts > 0

    fault_proxy.refuse(math.inf)
    async with running(store, mtproto_server) as (client, rec):
        await rec.until(lambda: sum(1 for c in rec.changes if c.reason is StateReason.REFUSED) >= 2)
        await mtproto_server.send_message(bob.id, alice.id, "while away")
    assert client.state is S.CLOSED
    left = await store.load()
    assert left is not None
    assert left.update_state == known.update_state
    assert left.ever_authorized is True

    fault_proxy.heal()
    async with running(store, mtproto_server) as (client, rec):
        rec.watch_messages()
        await client.wait_connected(10)
        await rec.all_messages(["while away"])
        assert rec.messages["before"] == 0  # caught up from the stored state, not from 0


async def test_a_revoked_string_session_is_auth_lost_not_replaced(
    mtproto_server: MTProtoTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A StringSession was logged in somewhere: a 401 for its key is a revocation, and the
    session is reported lost, never discarded as a never-authorized one."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    mtproto_server.revoke_auth_keys(alice.id)
    monkeypatch.setenv(VAR, string_session(mtproto_server, key))
    fallback = MemoryStore()
    async with running(EnvStringStore(VAR, fallback=fallback), mtproto_server) as (client, rec):
        await rec.state(S.AUTH_LOST)
        assert "AUTH_KEY_UNREGISTERED" in client.health().detail
        assert client.health().authorized is False
    kept = await fallback.load()  # the key is kept, still counted as authorized
    assert kept is None or (kept.auth_key == key and kept.ever_authorized)


async def test_a_revoked_session_imported_by_the_cli_is_auth_lost(
    mtproto_server: MTProtoTestServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    mtproto_server.revoke_auth_keys(alice.id)
    monkeypatch.setenv(VAR, string_session(mtproto_server, key))
    path = tmp_path / "imported.json"
    # The CLI runs its own event loop: in a worker thread.
    status = await anyio.to_thread.run_sync(
        main, ["session", "import", "--string-env", VAR, path.as_uri()]
    )
    assert status == 0, capsys.readouterr().err
    imported = await FileStore(path).load()
    assert imported is not None
    assert imported.ever_authorized is True
    before = path.read_bytes()
    async with running(FileStore(path), mtproto_server) as (client, rec):
        await rec.state(S.AUTH_LOST)
    assert path.read_bytes() == before
    assert client.state is S.AUTH_LOST


async def test_a_never_authorized_key_connects_unauthorized_and_accepts_a_login(
    mtproto_server: MTProtoTestServer,
) -> None:
    """A key that was never logged in (a login that failed) is not lost: CONNECTED,
    authorized False, and a login on it succeeds."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key()
    store = MemoryStore(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=mtproto_server.host,
            port=mtproto_server.port,
            auth_key=key,
        )
    )
    async with running(store, mtproto_server) as (client, _rec):
        await client.wait_connected(10)
        assert client.health().authorized is False
        telegram = client.telegram
        await telegram.send_code_request(alice.phone)
        await telegram.sign_in(alice.phone, mtproto_server.login_code(alice.phone))
        assert client.health().authorized is True
    saved = await store.load()
    assert saved is not None
    assert saved.auth_key == key
    assert saved.ever_authorized is True
    assert saved.update_state is not None
    async with running(store, mtproto_server) as (client, _rec):
        await client.wait_connected(10)
        assert client.health().authorized is True


async def test_a_login_that_failed_leaves_a_session_that_connects_unauthorized(
    mtproto_server: MTProtoTestServer,
) -> None:
    """A wrong code: the stored session has a key, no update state and is not authorized;
    the next client is CONNECTED with authorized False (not AUTH_LOST)."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = MemoryStore(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=mtproto_server.host,
            port=mtproto_server.port,
        )
    )
    async with running(store, mtproto_server) as (client, _rec):
        await client.wait_connected(10)
        telegram = client.telegram
        await telegram.send_code_request(alice.phone)
        with pytest.raises(errors.PhoneCodeInvalidError):
            await telegram.sign_in(alice.phone, "00000")
    saved = await store.load()
    assert saved is not None
    assert saved.auth_key is not None
    assert saved.ever_authorized is False
    assert saved.update_state is None
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        assert client.state is S.CONNECTED
        assert client.health().authorized is False
    assert S.AUTH_LOST not in rec.states()


class _Saves:
    """Internal listener: counts the session's writes to its store."""

    def __init__(self) -> None:
        self.count = 0

    def on_transition(self, change: object) -> None:
        pass

    def on_pong(self, rtt: float) -> None:
        pass

    def on_save(self, duration: float, error: BaseException | None) -> None:
        self.count += 1


async def test_an_idle_client_in_a_channel_writes_only_when_its_state_moves(
    mtproto_server: MTProtoTestServer,
) -> None:
    """The periodic flush saves the update state only when it changed: an idle client
    whose box holds a channel does not write every flush_interval (Telethon stamps each
    channel state it saves with the current time), yet a new post is still flushed."""
    server = mtproto_server
    alice = server.create_user("+15550301", "Alice")
    bob = server.create_user("+15550302", "Bob")
    room = server.create_channel(bob.id, "Room", megagroup=True, members=[alice.id])
    saves = _Saves()
    flush = 0.05
    async with running(seeded_store(server, user=alice), server, flush_interval=flush) as (
        client,
        _recorder,
    ):
        client._add_listener(saves)
        await client.wait_connected(20)
        session = client._session
        assert session is not None
        await server.post(room.id, bob.id, "hello")
        with anyio.fail_after(20):
            while room.id not in session._update_states or session.dirty:  # noqa: ASYNC110
                await anyio.sleep(flush)
        before = saves.count
        await anyio.sleep(20 * flush)  # twenty flush rounds with nothing new
        assert saves.count == before
        pts = session._update_states[room.id].pts
        await server.post(room.id, bob.id, "again")
        with anyio.fail_after(20):
            while session._update_states[room.id].pts == pts or saves.count == before:  # noqa: ASYNC110
                await anyio.sleep(flush)
