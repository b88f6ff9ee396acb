"""StoreSession, the bridge between Telethon's synchronous Session interface and an async
store: memory changes at once, writes happen in the background (urgent ones promptly,
the rest batched), failures keep the state in memory, and a corrupt store stops it
from starting."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from telethon import TelegramClient, events
from telethon.crypto import AuthKey
from telethon.tl import types

from resilient_tg import SessionCorruptError
from resilient_tg.stores import FileStore, MemoryStore, SessionData, SessionStore, StoreSession
from resilient_tg.testing import MTProtoTestServer
from resilient_tg.testing.store_contract import session_data

from .conftest import STEP_TIMEOUT, login, wait_until

pytestmark = pytest.mark.anyio

KEY = bytes(range(256))


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers every save and when it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[float, SessionData]] = []

    async def save(self, data: SessionData) -> None:
        await super().save(data)
        self.history.append((time.monotonic(), data))


class StoreDownError(Exception):
    pass


class FlakyStore(SessionStore):
    """A store whose writes fail while ``down`` is set, like a database in an outage."""

    def __init__(self) -> None:
        self.data: SessionData | None = None
        self.down = False
        self.failures = 0

    async def load(self) -> SessionData | None:
        return self.data

    async def save(self, data: SessionData) -> None:
        await anyio.lowlevel.checkpoint()
        if self.down:
            self.failures += 1
            raise StoreDownError("the database is unreachable")
        self.data = data

    async def delete(self) -> None:
        self.data = None


def user(uid: int, access_hash: int, username: str) -> types.User:
    return types.User(id=uid, access_hash=access_hash, username=username, first_name=username)


def users(*items: types.User) -> types.contacts.ResolvedPeer:
    """Something Telethon would pass to process_entities."""
    return types.contacts.ResolvedPeer(peer=types.PeerUser(items[0].id), chats=[], users=items)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=session_data())
def test_apply_then_snapshot_keeps_every_field(data: SessionData) -> None:
    session = StoreSession(MemoryStore())
    session.apply(data)
    assert session.snapshot() == data


async def test_open_restores_what_the_store_holds() -> None:
    data = SessionData(dc_id=4, server_address="10.0.0.4", port=443, auth_key=KEY)
    session = await StoreSession.open(MemoryStore(data))
    assert (session.dc_id, session.server_address, session.port) == (4, "10.0.0.4", 443)
    assert session.auth_key.key == KEY
    assert not session.dirty


async def test_a_corrupt_store_makes_open_raise_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.session"
    path.write_bytes(b'{"format":"resilient_tg.session","version":1,"dc_id":')
    with pytest.raises(SessionCorruptError, match="truncated") as info:
        await StoreSession.open(FileStore(path))
    assert str(path) in str(info.value)
    assert path.read_bytes() == b'{"format":"resilient_tg.session","version":1,"dc_id":'


async def test_an_auth_key_change_is_written_promptly() -> None:
    store = RecordingStore()
    session = await StoreSession.open(store, flush_interval=30.0)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        session.auth_key = AuthKey(KEY)
        await wait_until(lambda: any(d.auth_key == KEY for _, d in store.history), 2.0)
    finally:
        await session.aclose()


async def test_an_auth_key_change_is_not_held_back_by_a_pending_batch() -> None:
    """Entities wait for the batch interval; a new auth key arriving meanwhile does not."""
    store = RecordingStore()
    session = await StoreSession.open(store, flush_interval=30.0)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        await wait_until(lambda: len(store.history) == 1)
        session.process_entities(users(user(1, 11, "alice")))  # batched: 30 s
        await anyio.sleep(0.05)
        session.auth_key = AuthKey(KEY)
        await wait_until(lambda: any(d.auth_key == KEY for _, d in store.history), 2.0)
        assert len(store.history[-1][1].entities) == 1, "the pending entities go along"
    finally:
        await session.aclose()


async def test_entities_and_update_state_are_batched_per_flush_interval() -> None:
    interval = 0.3
    store = RecordingStore()
    session = await StoreSession.open(store, flush_interval=interval)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        session.auth_key = AuthKey(KEY)
        await wait_until(lambda: any(d.auth_key == KEY for _, d in store.history))
        first_at = store.history[-1][0]
        saves_before = len(store.history)
        started = time.monotonic()
        for n in range(20):  # as updates trickle in, letting the writer run in between
            session.process_entities(users(user(100 + n, n, f"user{n}")))
            session.set_update_state(
                0, types.updates.State(pts=n + 1, qts=0, date=_now(), seq=0, unread_count=0)
            )
            await anyio.lowlevel.checkpoint()
        spread = time.monotonic() - started  # ~0; more only on a very busy machine
        await wait_until(lambda: len(store.history[-1][1].entities) == 20)
        batch = store.history[saves_before:]
        assert len(batch) <= 1 + int(spread / interval), f"{len(batch)} writes for one batch"
        saved_at, saved = batch[0]
        assert saved_at - first_at >= interval * 0.9
        assert saved.update_state is not None
        assert saved.update_state.pts == 20
        assert not session.dirty
    finally:
        await session.aclose()


async def test_save_and_close_from_telethon_are_written_in_the_background() -> None:
    store = RecordingStore()
    session = await StoreSession.open(store, flush_interval=30.0)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        await wait_until(lambda: len(store.history) == 1)
        session.process_entities(users(user(5, 55, "eve")))
        session.close()  # what Telethon's disconnect() calls
        await wait_until(lambda: len(store.history) == 2, 2.0)
        assert store.history[-1][1].entities[0].username == "eve"
    finally:
        await session.aclose()


async def test_flush_raises_the_store_error_and_keeps_the_state_in_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    session = await StoreSession.open(store, flush_interval=30.0)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        session.auth_key = AuthKey(KEY)
        await session.flush()
        assert store.data is not None
        assert store.data.auth_key == KEY

        store.down = True
        session.process_entities(users(user(7, 77, "carol")))
        with pytest.raises(StoreDownError):
            await session.flush()
        assert session.dirty
        assert isinstance(session.last_save_error, StoreDownError)
        snapshot = session.snapshot()
        assert snapshot is not None
        assert snapshot.entities[0].username == "carol"
        assert store.data.entities == ()
        assert session.get_input_entity("carol").user_id == 7  # Telethon still finds it

        store.down = False
        await session.flush()
        assert store.data.entities[0].username == "carol"
        assert not session.dirty
        assert session.last_save_error is None
    finally:
        await session.aclose()
    for text in (KEY.hex(), repr(KEY)[2:40]):
        assert text not in caplog.text


async def test_the_background_writer_retries_until_the_store_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "resilient_tg.stores")
    store = FlakyStore()
    store.down = True
    session = await StoreSession.open(store, flush_interval=0.05)
    try:
        session.set_dc(2, "127.0.0.1", 443)
        session.auth_key = AuthKey(KEY)
        await wait_until(lambda: store.failures >= 1)
        assert "keeping it in memory" in caplog.text
        assert session.snapshot() is not None
        store.down = False
        await wait_until(lambda: store.data is not None and store.data.auth_key == KEY, 5.0)
    finally:
        await session.aclose()
    assert KEY.hex() not in caplog.text


async def test_aclose_raises_when_the_final_write_fails() -> None:
    store = FlakyStore()
    session = await StoreSession.open(store)
    session.set_dc(2, "127.0.0.1", 443)
    store.down = True
    with pytest.raises(StoreDownError):
        await session.aclose()
    assert session.dirty


async def test_delete_from_telethon_log_out_empties_the_store() -> None:
    store = MemoryStore(SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=KEY))
    session = await StoreSession.open(store)
    session.delete()
    await session.flush()
    assert await store.load() is None
    await session.aclose()


async def test_a_memory_store_resumes_a_raw_telethon_client_in_process(
    mtproto_server: MTProtoTestServer,
) -> None:
    """MemoryStore lives in this process only; within it, a second client on the same
    store is authorized at once and catches up on what it missed."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = MemoryStore()

    session = await StoreSession.open(store)
    session.set_dc(mtproto_server.dc_id, mtproto_server.host, mtproto_server.port)
    client = TelegramClient(session, mtproto_server.api_id, mtproto_server.api_hash)
    with anyio.fail_after(STEP_TIMEOUT):
        await client.connect()
        try:
            await login(client, mtproto_server, bob)
        finally:
            await client.disconnect()
            await session.aclose()
    saved = await store.load()
    assert saved is not None
    assert saved.auth_key is not None
    assert saved.update_state is not None

    texts = ["a", "b", "c"]
    for text in texts:
        await mtproto_server.send_message(alice.id, bob.id, text)

    session = await StoreSession.open(store)
    client = TelegramClient(session, mtproto_server.api_id, mtproto_server.api_hash, catch_up=True)
    got: list[str] = []
    all_in = asyncio.Event()

    @client.on(events.NewMessage(incoming=True))
    async def on_message(event: events.NewMessage.Event) -> None:
        got.append(event.raw_text)
        if len(got) == len(texts):
            all_in.set()

    with anyio.fail_after(STEP_TIMEOUT):
        await client.connect()
        try:
            assert await client.is_user_authorized()
            assert (await client.get_me()).id == bob.id
            await client.catch_up()
            await all_in.wait()
        finally:
            await client.disconnect()
            await session.aclose()
    assert got == texts
    assert len(mtproto_server.requests_for("auth.signIn")) == 1
    after = await store.load()
    assert after is not None
    assert after.update_state is not None
    assert after.update_state.pts > saved.update_state.pts


def _now() -> object:
    import datetime as dt

    return dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0)
