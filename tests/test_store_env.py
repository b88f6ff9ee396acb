"""EnvStringStore: Telethon StringSessions from the environment, a fallback store for what
a variable cannot hold, loud reports when the variable goes stale, and no echo of the
string anywhere."""

from __future__ import annotations

import base64
import logging
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telethon.crypto import AuthKey
from telethon.sessions import StringSession

from resilient_tg import SessionCorruptError, SessionInUseError
from resilient_tg.stores import (
    Entity,
    EnvStringStore,
    FileStore,
    MemoryStore,
    SessionData,
    UpdateState,
    open_store,
)
from resilient_tg.testing import MTProtoTestServer

from .conftest import login, session_for, telethon_client
from .store_worker import server_job, start_worker
from .test_store_file import renderings, run_login_then_resume

pytestmark = pytest.mark.anyio

VAR = "RTG_TEST_SESSION"
KEY = bytes((i * 13 + 1) % 256 for i in range(256))
OTHER_KEY = bytes((i * 17 + 2) % 256 for i in range(256))
# RTG_FUZZ_EXAMPLES raises the example count for a longer hunt outside CI.
FUZZ = settings(
    max_examples=int(os.environ.get("RTG_FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def telethon_string(dc_id: int, ip: str, port: int, key: bytes) -> str:
    """A session string exactly as Telethon's StringSession writes it."""
    session = StringSession()
    session.set_dc(dc_id, ip, port)
    session.auth_key = AuthKey(key)
    text: str = session.save()
    return text


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment, with the test variable unset (restored after the test)."""
    monkeypatch.delenv(VAR, raising=False)
    return monkeypatch


async def load_or_error(store: EnvStringStore) -> SessionData | SessionCorruptError | None:
    try:
        return await store.load()
    except SessionCorruptError as exc:
        return exc


def errors_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# Reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("149.154.167.51", "149.154.167.51"), ("2001:67c:4e8:f002::a", "2001:67c:4e8:f002::a")],
)
async def test_a_telethon_string_session_loads(
    env: pytest.MonkeyPatch, ip: str, expected: str
) -> None:
    env.setenv(VAR, telethon_string(2, ip, 443, KEY))
    data = await EnvStringStore(VAR).load()
    # A string carries a logged-in session: it counts as authorized (a 401 is a revocation).
    assert data == SessionData(
        dc_id=2, server_address=expected, port=443, auth_key=KEY, ever_authorized=True
    )


async def test_surrounding_whitespace_is_ignored(env: pytest.MonkeyPatch) -> None:
    env.setenv(VAR, "  " + telethon_string(4, "127.0.0.1", 8443, KEY) + "\n")
    data = await EnvStringStore(VAR).load()
    assert data is not None
    assert data.dc_id == 4
    assert data.port == 8443


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_an_unset_or_empty_variable_is_an_empty_store(
    env: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        env.setenv(VAR, value)
    assert await EnvStringStore(VAR).load() is None


async def test_constructor_reads_nothing_and_describe_names_the_variable(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv(VAR, "not a session")
    store = EnvStringStore(VAR, fallback=MemoryStore())  # a bad value is not read yet
    assert store.describe() == f"env://{VAR}"
    assert repr(store) == f"<EnvStringStore env://{VAR} fallback=<MemoryStore memory://>>"
    with pytest.raises(ValueError, match="variable"):
        EnvStringStore("")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2" + "A" * 351, "version"),
        ("1" + "*" * 351, "base64"),
        ("1" + "AAAA", "3 bytes decoded"),
        (
            "1" + base64.urlsafe_b64encode(struct.pack(">B4sH256s", 0, bytes(4), 1, KEY)).decode(),
            "dc_id",
        ),
        (
            "1" + base64.urlsafe_b64encode(struct.pack(">B4sH256s", 2, bytes(4), 0, KEY)).decode(),
            "port",
        ),
        ("1ÄÖÜ", "base64"),
    ],
)
async def test_a_malformed_string_is_an_error_naming_the_variable_not_the_value(
    env: pytest.MonkeyPatch, value: str, message: str
) -> None:
    env.setenv(VAR, value)
    with pytest.raises(SessionCorruptError, match=message) as info:
        await EnvStringStore(VAR).load()
    assert f"env://{VAR}" in str(info.value)
    assert info.value.store == f"env://{VAR}"
    assert value[1:20] not in str(info.value)


@FUZZ
@given(value=st.text(min_size=1, max_size=400))
async def test_random_text_is_our_error_or_a_valid_session(
    env: pytest.MonkeyPatch, value: str
) -> None:
    if "\x00" in value:
        value = value.replace("\x00", "")  # the environment cannot hold NUL
    env.setenv(VAR, value)
    outcome = await load_or_error(EnvStringStore(VAR))
    if isinstance(outcome, SessionCorruptError):
        stripped = value.strip()
        if len(stripped) >= 12:
            assert stripped[1:12] not in str(outcome)
    else:
        assert outcome is None or isinstance(outcome, SessionData)


@FUZZ
@given(
    cut=st.integers(min_value=0),
    position=st.integers(min_value=0),
    # What a variable can hold: no NUL, no lone surrogates (see the bytes test below).
    char=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
)
async def test_a_damaged_telethon_string_is_our_error_or_a_valid_session(
    env: pytest.MonkeyPatch, cut: int, position: int, char: str
) -> None:
    good = telethon_string(2, "149.154.167.51", 443, KEY)
    damaged = good[: cut % (len(good) + 1)] if cut % 3 == 0 else good
    if damaged and cut % 3 != 2:
        at = position % len(damaged)
        damaged = damaged[:at] + char + damaged[at + 1 :]
    env.setenv(VAR, damaged)
    outcome = await load_or_error(EnvStringStore(VAR))
    if isinstance(outcome, SessionCorruptError):
        for text in [*renderings(KEY), good[1:40]]:
            assert text not in str(outcome)
    else:
        assert outcome is None or isinstance(outcome, SessionData)


async def test_undecodable_bytes_in_the_variable_are_our_error(env: pytest.MonkeyPatch) -> None:
    """Python shows bytes that are not UTF-8 as lone surrogates in os.environ."""
    env.setitem(os.environb, VAR.encode(), b"1\xff\xfe" + b"A" * 349)
    assert "\udcff" in os.environ[VAR]
    with pytest.raises(SessionCorruptError, match="base64"):
        await EnvStringStore(VAR).load()


# The fallback -----------------------------------------------------------------------------


async def test_load_prefers_the_fallback_when_it_holds_a_session(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    newer = SessionData(dc_id=4, server_address="127.0.0.2", port=443, auth_key=OTHER_KEY)
    store = EnvStringStore(VAR, fallback=MemoryStore(newer))
    caplog.set_level(logging.WARNING, "resilient_tg.stores")
    assert await store.load() == newer
    assert await store.load() == newer
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, "the mismatch is reported once"
    assert "holds a different session than memory://" in warnings[0]
    assert warnings[0].count("memory://") == 1, "each store is named once"


async def test_an_empty_fallback_falls_through_to_the_variable(env: pytest.MonkeyPatch) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    data = await EnvStringStore(VAR, fallback=MemoryStore()).load()
    assert data is not None
    assert data.auth_key == KEY


async def test_entities_and_update_state_go_to_the_fallback_quietly(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    fallback = MemoryStore()
    store = EnvStringStore(VAR, fallback=fallback)
    loaded = await store.load()
    assert loaded is not None
    richer = SessionData(
        dc_id=loaded.dc_id,
        server_address=loaded.server_address,
        port=loaded.port,
        auth_key=loaded.auth_key,
        update_state=UpdateState(pts=5, qts=0, date=1, seq=1),
        entities=(Entity(id=1, access_hash=2, username="alice"),),
    )
    caplog.set_level(logging.DEBUG, "resilient_tg.stores")
    await store.save(richer)
    assert await fallback.load() == richer
    assert await store.load() == richer
    assert errors_in(caplog) == []


async def test_a_changed_auth_key_is_written_to_the_fallback_and_reported_once(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    fallback = MemoryStore()
    store = EnvStringStore(VAR, fallback=fallback)
    caplog.set_level(logging.DEBUG)
    changed = SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=OTHER_KEY)
    for pts in range(3):  # the same change saved again is not reported again
        await store.save(
            SessionData(
                dc_id=2,
                server_address="127.0.0.1",
                port=443,
                auth_key=OTHER_KEY,
                update_state=UpdateState(pts=pts),
            )
        )
    assert (await fallback.load()).auth_key == OTHER_KEY  # type: ignore[union-attr]
    errors = errors_in(caplog)
    assert len(errors) == 1
    assert VAR in errors[0].getMessage()
    assert "memory://" in errors[0].getMessage()
    # A second change (a DC migration) is a new report.
    await store.save(SessionData(dc_id=4, server_address="10.0.0.4", port=443, auth_key=KEY))
    assert len(errors_in(caplog)) == 2
    for text in renderings(OTHER_KEY) + renderings(KEY):
        assert text not in caplog.text
    assert changed.auth_key is not None


async def test_without_a_fallback_a_new_key_is_reported_and_other_changes_dropped(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    store = EnvStringStore(VAR)
    caplog.set_level(logging.DEBUG)
    same_key = SessionData(
        dc_id=2,
        server_address="127.0.0.1",
        port=443,
        auth_key=KEY,
        update_state=UpdateState(pts=9),
    )
    await store.save(same_key)
    assert errors_in(caplog) == []
    assert await store.load() == SessionData(
        dc_id=2, server_address="127.0.0.1", port=443, auth_key=KEY, ever_authorized=True
    ), "update state cannot be kept without a fallback"
    await store.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=OTHER_KEY))
    errors = errors_in(caplog)
    assert len(errors) == 1
    assert "lost when it ends" in errors[0].getMessage()
    assert VAR in errors[0].getMessage()


async def test_a_new_login_with_no_variable_set_is_reported(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = EnvStringStore(VAR, fallback=MemoryStore())
    caplog.set_level(logging.ERROR)
    await store.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443))
    assert errors_in(caplog) == [], "no key yet: nothing is lost"
    await store.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=KEY))
    assert len(errors_in(caplog)) == 1


async def test_delete_empties_the_fallback_and_stops_using_the_variable(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv(VAR, telethon_string(2, "127.0.0.1", 443, KEY))
    fallback = MemoryStore(SessionData(dc_id=2, server_address="127.0.0.1", port=443))
    store = EnvStringStore(VAR, fallback=fallback)
    caplog.set_level(logging.WARNING)
    await store.delete()
    assert await fallback.load() is None
    assert await store.load() is None, "a deleted (logged-out) session is not used again"
    assert any("remove" in r.getMessage() and VAR in r.getMessage() for r in caplog.records)
    # Without a fallback too.
    bare = EnvStringStore(VAR)
    await bare.delete()
    assert await bare.load() is None
    await bare.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=KEY))
    assert await bare.load() is not None


async def test_open_store_builds_an_env_store_with_a_file_fallback(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = open_store(f"env://{VAR}?fallback={(tmp_path / 's.json').as_uri()}")
    assert isinstance(store, EnvStringStore)
    assert isinstance(store.fallback, FileStore)
    assert store.describe() == f"env://{VAR}"
    assert not (tmp_path / "s.json").exists()


# Lease ------------------------------------------------------------------------------------


async def test_the_lease_is_the_fallbacks(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = EnvStringStore(VAR, fallback=FileStore(tmp_path / "s.json"))
    await store.acquire_lease("env-holder", 30)
    with pytest.raises(SessionInUseError) as info:
        await FileStore(tmp_path / "s.json").acquire_lease("file-holder", 30)
    assert info.value.holder == "env-holder"
    await store.release_lease("env-holder")
    await store.aclose()


async def test_without_a_fallback_the_lease_is_process_local_per_variable(
    env: pytest.MonkeyPatch,
) -> None:
    a, b = EnvStringStore(VAR), EnvStringStore(VAR)
    assert EnvStringStore.cross_process_lease is False
    await a.acquire_lease("a", 30)
    with pytest.raises(SessionInUseError):
        await b.acquire_lease("b", 30)
    await EnvStringStore("RTG_OTHER_VAR").acquire_lease("c", 30)  # another session
    await a.release_lease("a")
    await b.acquire_lease("b", 30)
    await b.release_lease("b")
    await EnvStringStore("RTG_OTHER_VAR").release_lease("c")


# Secrets ----------------------------------------------------------------------------------


async def test_the_string_and_key_never_appear_in_logs_reprs_or_errors(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    string = telethon_string(2, "127.0.0.1", 443, KEY)
    env.setenv(VAR, string)
    fallback = MemoryStore()
    store = EnvStringStore(VAR, fallback=fallback)
    data = await store.load()
    assert data is not None
    await store.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=OTHER_KEY))
    await store.load()
    await store.delete()
    errors: list[Exception] = []
    for broken in (
        string[:-10],
        string[:100] + "!" + string[101:],
        "1" + string[2:],
        string + "AA",
    ):
        env.setenv(VAR, broken)
        try:
            await EnvStringStore(VAR).load()
        except SessionCorruptError as exc:
            errors.append(exc)
    assert len(errors) == 4
    shown = "\n".join(
        [caplog.text, repr(store), repr(data), str(data)] + [f"{e!s} {e!r}" for e in errors]
    )
    for secret in (KEY, OTHER_KEY):
        for text in renderings(secret):
            assert text not in shown
    for piece in (string, string[1:30], string[-30:]):
        assert piece not in shown


# Telethon in real processes ---------------------------------------------------------------


async def test_a_login_with_a_file_fallback_resumes_in_a_new_process(
    mtproto_server: MTProtoTestServer, tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    """No string yet: the first process logs in; its new key goes to the fallback (with an
    ERROR that names the variable and not the key), and the next process resumes from it."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    fallback = tmp_path / "fallback" / "bob.json"
    spec = {"kind": "env", "var": VAR, "fallback": {"kind": "file", "path": str(fallback)}}
    logs = await run_login_then_resume(mtproto_server, tmp_path, spec, alice.id, bob.id, bob.phone)
    assert f"ERROR resilient_tg.stores: env://{VAR}" in logs[0]
    stored = await FileStore(fallback).load()
    assert stored is not None
    assert stored.auth_key is not None
    for log_text in logs:
        for text in renderings(stored.auth_key):
            assert text not in log_text


async def test_a_telethon_string_session_resumes_in_new_processes(
    mtproto_server: MTProtoTestServer, tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    """A StringSession made by plain Telethon works from the variable alone; the fallback
    then keeps the update state, so a later process catches up on what it missed."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    string_session = StringSession()
    string_session.set_dc(mtproto_server.dc_id, mtproto_server.host, mtproto_server.port)
    async with telethon_client(mtproto_server, session=string_session) as client:
        await login(client, mtproto_server, bob)
    string = string_session.save()
    assert string
    assert session_for(mtproto_server) is not None
    env.setenv(VAR, string)

    fallback = tmp_path / "bob.json"
    base = {
        "server": server_job(mtproto_server),
        "store": {"kind": "env", "var": VAR, "fallback": {"kind": "file", "path": str(fallback)}},
        "mode": "resume",
    }
    async with start_worker({**base, "expect_messages": 0}, tmp_path / "first.log") as first:
        assert await first.expect("resumed") == {
            "event": "resumed",
            "authorized": True,
            "id": bob.id,
        }
        await first.expect("messages")
        await first.expect("done")
        assert await first.wait() == 0
    stored = await FileStore(fallback).load()
    assert stored is not None
    assert stored.update_state is not None

    texts = ["one", "two"]
    for text in texts:
        await mtproto_server.send_message(alice.id, bob.id, text)
    async with start_worker({**base, "expect_messages": 2}, tmp_path / "second.log") as second:
        assert (await second.expect("resumed"))["authorized"] is True
        assert (await second.expect("messages"))["texts"] == texts
        await second.expect("done")
        assert await second.wait() == 0
    assert len(mtproto_server.requests_for("auth.signIn")) == 1
    for name in ("first.log", "second.log"):
        log_text = (tmp_path / name).read_text()
        assert "ERROR" not in log_text, "the key never changed"
        assert string[1:40] not in log_text
