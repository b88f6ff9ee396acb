"""FileStore on real files and real processes: atomic saves survive kill -9, corrupt
files are reported (never replaced), the lock-file lease excludes other processes and
dies with its holder, files are private, and Telethon sessions move in and out."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import random
import signal
import stat
import time
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession

from resilient_tg import SessionCorruptError, SessionInUseError
from resilient_tg.stores import Entity, FileStore, SessionData, StoreSession, UpdateState
from resilient_tg.stores._data import encode
from resilient_tg.testing import MTProtoTestServer

from .conftest import STEP_TIMEOUT, login, telethon_client
from .store_worker import check_consistent, consistent_data, server_job, start_worker

pytestmark = pytest.mark.anyio

KEY = bytes(range(256))
ENC_KEY = bytes(range(100, 132))
# RTG_FUZZ_EXAMPLES raises the example count for a longer hunt outside CI.
FUZZ = settings(
    max_examples=int(os.environ.get("RTG_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def sample(pts: int = 5) -> SessionData:
    return SessionData(
        dc_id=2,
        server_address="127.0.0.1",
        port=4430,
        auth_key=KEY,
        takeout_id=77,
        update_state=UpdateState(pts=pts, qts=2, date=1_700_000_000, seq=4, channels={10: 3}),
        entities=(Entity(id=5, access_hash=-5, username="bob", phone="15550002", name="Bob"),),
    )


def renderings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        repr(secret)[2:60],
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temp_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp." in n)


# Construction, format, permissions ------------------------------------------------------


async def test_constructor_does_no_io_and_describe_is_a_file_url(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "a" / "b" / "bot.session")
    assert not (tmp_path / "a").exists()
    assert store.describe() == (tmp_path / "a" / "b" / "bot.session").as_uri()
    assert store.describe().startswith("file:///")
    assert repr(store) == f"<FileStore {store.describe()}>"
    assert FileStore.cross_process_lease is True


async def test_relative_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = FileStore("bot.session")
    assert store.path == tmp_path / "bot.session"
    await store.save(sample())
    assert (tmp_path / "bot.session").exists()


async def test_missing_file_loads_none_and_delete_is_a_no_op(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "none.session")
    assert await store.load() is None
    await store.delete()
    assert await store.load() is None


async def test_file_is_the_versioned_json_document(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bot.session")
    await store.save(sample())
    assert (tmp_path / "bot.session").read_bytes() == encode(sample())


async def test_files_are_0600_and_created_directories_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a permissive umask must not leak into our modes
    try:
        existing = tmp_path / "existing"
        existing.mkdir(mode=0o755)
        os.chmod(existing, 0o755)
        store = FileStore(existing / "new1" / "new2" / "bot.session")
        await store.save(sample())
        await store.acquire_lease("h", 30)
        await store.release_lease("h")
    finally:
        os.umask(old_umask)
    assert mode(existing) == 0o755, "an existing directory is left as it was"
    assert mode(existing / "new1") == 0o700
    assert mode(existing / "new1" / "new2") == 0o700
    assert mode(store.path) == 0o600
    assert mode(store.lock_path) == 0o600


async def test_save_replaces_a_too_open_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "bot.session"
    path.write_bytes(encode(sample(1)))
    os.chmod(path, 0o644)
    await FileStore(path).save(sample(2))
    assert mode(path) == 0o600


async def test_save_leaves_no_temp_files_and_works_in_many_concurrent_tasks(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "bot.session")
    async with anyio.create_task_group() as tg:
        for pts in range(20):
            tg.start_soon(store.save, sample(pts))
    loaded = await store.load()
    assert loaded is not None
    assert loaded.update_state is not None
    assert 0 <= loaded.update_state.pts < 20
    assert temp_files(tmp_path) == []


async def test_save_rejects_what_is_not_session_data(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SessionData"):
        await FileStore(tmp_path / "x").save({"dc_id": 2})  # type: ignore[arg-type]


async def test_store_io_runs_in_a_worker_thread(tmp_path: Path) -> None:
    """Blocking file work (fsync included) happens off the event loop's thread."""
    import threading

    store = FileStore(tmp_path / "bot.session")
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real_fsync = os.fsync

    def spy_fsync(fd: int) -> None:
        seen.append(threading.get_ident())
        real_fsync(fd)

    os.fsync = spy_fsync  # type: ignore[assignment]
    try:
        await store.save(sample())
        await store.load()
    finally:
        os.fsync = real_fsync  # type: ignore[assignment]
    assert seen, "save fsyncs"
    assert loop_thread not in seen


# Corrupt files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (encode(sample())[:40], "truncated"),
        (b"\x00\x01garbage\xff", "not a session document"),
        (b'{"format": "something else"}', "not a resilient_tg session"),
        (b"SQLite format 3\x00" + bytes(100), "import_telethon"),
        (b"RTGE1" + bytes(60), "is encrypted"),
        (encode(sample()).replace(b'"version":2', b'"version":99'), "version 99"),
        (encode(sample()).replace(b'"port":4430', b'"port":"x"'), "missing or invalid field"),
    ],
)
async def test_a_corrupt_file_is_an_error_naming_the_file_and_is_never_overwritten(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bot.session"
    path.write_bytes(content)
    store = FileStore(path)
    with pytest.raises(SessionCorruptError, match=message) as info:
        await store.load()
    assert store.describe() in str(info.value)
    assert info.value.store == store.describe()
    with pytest.raises(SessionCorruptError):
        await StoreSession.open(store)
    assert path.read_bytes() == content


async def test_a_directory_or_unreadable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "dir.session").mkdir()
    with pytest.raises(SessionCorruptError, match="directory"):
        await FileStore(tmp_path / "dir.session").load()
    path = tmp_path / "locked.session"
    path.write_bytes(encode(sample()))
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):  # running as root: permissions do not apply
            return
        with pytest.raises(SessionCorruptError, match="cannot be read"):
            await FileStore(path).load()
    finally:
        os.chmod(path, 0o600)


@FUZZ
@given(blob=st.binary(max_size=600))
async def test_random_bytes_are_a_session_corrupt_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "fuzz.session"
    path.write_bytes(blob)
    with pytest.raises(SessionCorruptError):
        await FileStore(path).load()


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(encode(sample())) - 1))
async def test_every_truncation_of_a_file_is_a_session_corrupt_error(
    tmp_path: Path, cut: int
) -> None:
    path = tmp_path / "cut.session"
    path.write_bytes(encode(sample())[:cut])
    with pytest.raises(SessionCorruptError):
        await FileStore(path).load()


@FUZZ
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
async def test_a_changed_byte_gives_valid_data_or_our_error(
    tmp_path: Path, position: int, value: int
) -> None:
    raw = bytearray(encode(sample()))
    raw[position % len(raw)] = value
    path = tmp_path / "flip.session"
    path.write_bytes(bytes(raw))
    try:
        loaded = await FileStore(path).load()
    except SessionCorruptError:
        return
    assert isinstance(loaded, SessionData)


async def test_deeply_nested_json_is_a_session_corrupt_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.session"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(SessionCorruptError):
        await FileStore(path).load()


# Encryption -----------------------------------------------------------------------------


async def test_an_encrypted_file_holds_no_key_material_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "bot.session"
    store = FileStore(path, encryption_key=ENC_KEY)
    await store.save(sample())
    raw = path.read_bytes()
    assert raw.startswith(b"RTGE1")
    for text in renderings(KEY):
        assert text.encode() not in raw
    assert KEY not in raw
    assert KEY[:32] not in raw
    assert b"127.0.0.1" not in raw
    assert b"bob" not in raw
    assert await store.load() == sample()
    assert "encrypted" in repr(store)
    assert ENC_KEY.hex() not in repr(store)


async def test_encryption_key_from_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTG_TEST_FILE_KEY", base64.b64encode(ENC_KEY).decode())
    path = tmp_path / "bot.session"
    await FileStore(path, encryption_key_env="RTG_TEST_FILE_KEY").save(sample())
    assert await FileStore(path, encryption_key=ENC_KEY).load() == sample()


async def test_a_moved_encrypted_file_still_opens_with_its_key(tmp_path: Path) -> None:
    await FileStore(tmp_path / "a.session", encryption_key=ENC_KEY).save(sample())
    (tmp_path / "b").mkdir()
    os.replace(tmp_path / "a.session", tmp_path / "b" / "restored.session")
    restored = FileStore(tmp_path / "b" / "restored.session", encryption_key=ENC_KEY)
    assert await restored.load() == sample()


async def test_a_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bot.session"
    await FileStore(path, encryption_key=ENC_KEY).save(sample())
    before = path.read_bytes()
    with pytest.raises(SessionCorruptError, match="wrong encryption key") as info:
        await FileStore(path, encryption_key=bytes(32)).load()
    assert str(path) in str(info.value)
    with pytest.raises(SessionCorruptError, match="is encrypted"):
        await FileStore(path).load()
    assert path.read_bytes() == before


async def test_a_plaintext_file_read_with_a_key_says_it_is_not_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "bot.session"
    await FileStore(path).save(sample())
    with pytest.raises(SessionCorruptError, match="not encrypted"):
        await FileStore(path, encryption_key=ENC_KEY).load()


@FUZZ
@given(cut=st.integers(min_value=0), position=st.integers(min_value=0))
async def test_a_truncated_or_altered_encrypted_file_is_a_session_corrupt_error(
    tmp_path: Path, cut: int, position: int
) -> None:
    path = tmp_path / "enc.session"
    store = FileStore(path, encryption_key=ENC_KEY)
    await store.save(sample())
    raw = bytearray(path.read_bytes())
    if cut % 2:
        raw = raw[: cut % len(raw)]
    else:
        raw[position % len(raw)] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(SessionCorruptError):
        await store.load()


def test_a_bad_encryption_key_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FileStore(tmp_path / "x", encryption_key=b"short")
    with pytest.raises(ValueError, match="not both"):
        FileStore(tmp_path / "x", encryption_key=ENC_KEY, encryption_key_env="X")


# Secrets --------------------------------------------------------------------------------


async def test_the_auth_key_never_appears_in_logs_reprs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "bot.session"
    store = FileStore(path, encryption_key=ENC_KEY)
    await store.save(sample())
    await store.load()
    lease = await store.acquire_lease("holder", 30)
    await store.renew_lease("holder", 30)
    await store.release_lease("holder")
    errors: list[Exception] = []
    for bad in (FileStore(path, encryption_key=bytes(32)), FileStore(path)):
        try:
            await bad.load()
        except SessionCorruptError as exc:
            errors.append(exc)
    plain = FileStore(tmp_path / "plain.session")
    raw = encode(sample())
    for broken in (raw[:300], raw.replace(b'"port":4430', b'"port":-1'), raw[:-3]):
        (tmp_path / "plain.session").write_bytes(broken)
        try:
            await plain.load()
        except SessionCorruptError as exc:
            errors.append(exc)
    assert len(errors) == 5
    assert caplog.records, "DEBUG logging was on"
    shown = "\n".join(
        [caplog.text, repr(store), repr(plain), repr(lease), repr(sample()), str(sample())]
        + [f"{e!s} {e!r} {e.store}" for e in errors]
    )
    for secret in (KEY, ENC_KEY):
        for text in renderings(secret):
            assert text not in shown


# Lease in one process -------------------------------------------------------------------


def test_flock_on_two_fds_of_one_process_excludes(tmp_path: Path) -> None:
    """The assumption the FileStore lease rests on: flock belongs to the open file."""
    path = tmp_path / "x.lock"
    fd1 = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fd2 = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd1, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd1)
        fd1 = -1
        fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        for fd in (fd1, fd2):
            if fd >= 0:
                os.close(fd)


async def test_two_store_objects_on_one_path_exclude_each_other(tmp_path: Path) -> None:
    a = FileStore(tmp_path / "bot.session")
    b = FileStore(str(tmp_path / "bot.session"))
    lease = await a.acquire_lease("holder-a", 30)
    with pytest.raises(SessionInUseError) as info:
        await b.acquire_lease("holder-b", 30)
    assert info.value.holder == "holder-a"
    current = await b.current_lease()
    assert current is not None
    assert current.holder == "holder-a"
    # The same holder through another object shares the lease it already has.
    again = await b.acquire_lease("holder-a", 30)
    assert again.token == lease.token
    await a.release_lease("holder-a")
    taken = await b.acquire_lease("holder-b", 30)
    assert taken.token == lease.token + 1
    await b.aclose()  # releases what was taken through b
    assert await a.current_lease() is None


async def test_a_removed_lock_file_voids_the_lease_at_the_next_renew(tmp_path: Path) -> None:
    from resilient_tg import LeaseLostError

    store = FileStore(tmp_path / "bot.session")
    await store.acquire_lease("holder-a", 30)
    os.unlink(store.lock_path)
    with pytest.raises(LeaseLostError, match="removed or replaced"):
        await store.renew_lease("holder-a", 30)
    other = await FileStore(tmp_path / "bot.session").acquire_lease("holder-b", 30)
    assert other.holder == "holder-b"
    await store.release_lease("holder-b")


async def test_writes_are_fenced_once_the_lease_is_taken_over(tmp_path: Path) -> None:
    from resilient_tg import LeaseLostError

    path = tmp_path / "bot.session"
    old = FileStore(path)
    await old.acquire_lease("old", 0.2)
    await old.save(sample(1))
    await anyio.sleep(0.25)  # the TTL runs out; in this process the lease can be taken
    new = FileStore(path)
    await new.acquire_lease("new", 30)
    await new.save(sample(2))
    with pytest.raises(LeaseLostError, match="taken over by new"):
        await old.save(sample(3))
    with pytest.raises(LeaseLostError):
        await old.delete()
    assert await new.load() == sample(2)
    await FileStore(path).save(sample(4))  # an object that took no lease is not fenced
    await new.release_lease("new")


async def test_writes_are_fenced_when_the_lock_file_is_removed(tmp_path: Path) -> None:
    from resilient_tg import LeaseLostError

    store = FileStore(tmp_path / "bot.session")
    await store.acquire_lease("holder", 30)
    await store.save(sample(1))
    os.unlink(store.lock_path)
    with pytest.raises(LeaseLostError, match="lock file"):
        await store.save(sample(2))
    assert await store.load() == sample(1)
    await store.acquire_lease("holder", 30)  # a new lock file, a new lease
    await store.save(sample(3))
    await store.release_lease("holder")
    await store.save(sample(4))  # released: no longer fenced
    assert await store.load() == sample(4)


async def test_tokens_keep_growing_across_processes_and_releases(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bot.session")
    tokens = []
    for holder in ("a", "b", "c"):
        tokens.append((await store.acquire_lease(holder, 30)).token)
        await store.release_lease(holder)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


# Processes ------------------------------------------------------------------------------


async def test_kill_9_during_saves_always_leaves_a_loadable_session(tmp_path: Path) -> None:
    """200 kill -9s at random moments of a save loop: the file always loads, as the
    old or the new session (never a mix, never older than a completed save), and the
    temp files of interrupted saves never get in the way."""
    lanes, kills_per_lane, entity_count = 4, 50, 300
    rng = random.Random(20240611)
    stray_after_kill = 0

    async def lane(n: int) -> None:
        nonlocal stray_after_kill
        directory = tmp_path / f"lane{n}"
        store = FileStore(directory / "bot.session")
        await store.save(consistent_data(0, entity_count))
        job = {"mode": "zygote", "path": str(store.path), "entities": entity_count}
        async with start_worker(job, tmp_path / f"zygote{n}.log") as zygote:
            await zygote.expect("ready")
            last = 0
            for _ in range(kills_per_lane):
                await zygote.send("fork")
                ready = await zygote.expect("ready")
                assert ready["first"] == last + 1
                await anyio.sleep(rng.uniform(0, 0.015))
                os.kill(ready["pid"], signal.SIGKILL)
                await zygote.send(f"wait {ready['pid']}")
                dead = await zygote.expect("dead")
                assert dead["signal"] == signal.SIGKILL
                loaded = await store.load()
                assert loaded is not None
                i = check_consistent(loaded)
                assert i >= ready["first"], "a completed save was lost"
                stray_after_kill += len(temp_files(directory))
                last = i
        # A later save sweeps the temp files of the dead writers.
        await store.save(consistent_data(last + 1, entity_count))
        assert temp_files(directory) == []

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for n in range(lanes):
                tg.start_soon(lane, n)
    # Temp files left behind show that kills landed inside saves, not only between them.
    assert stray_after_kill > 0


async def test_two_processes_race_for_one_lease_and_it_outlives_only_its_process(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.session")
    ttl = 2.0

    def job(holder: str) -> dict[str, object]:
        return {"mode": "lease", "path": path, "holder": holder, "ttl": ttl, "renew": True}

    async with (
        start_worker(job("proc-a"), tmp_path / "a.log") as a,
        start_worker(job("proc-b"), tmp_path / "b.log") as b,
    ):
        await a.expect("ready")
        await b.expect("ready")
        await a.send("go")
        await b.send("go")
        results = {"a": await a.event(), "b": await b.event()}
        outcomes = sorted(r["event"] for r in results.values())
        assert outcomes == ["in_use", "won"], results
        winner, loser = (a, b) if results["a"]["event"] == "won" else (b, a)
        won = results["a"] if winner is a else results["b"]
        lost = results["b"] if winner is a else results["a"]
        assert lost["holder"] == won["holder"]
        assert lost["expires_at"] == pytest.approx(won["expires_at"], abs=ttl)
        assert await loser.wait() == 0

        # This process is refused too, with the holder named.
        store = FileStore(path)
        with pytest.raises(SessionInUseError) as info:
            await store.acquire_lease("tester", ttl)
        assert info.value.holder == won["holder"]

        winner.kill()  # kill -9: no release runs
        await winner.wait()

    # Its TTL has not passed yet, but the process is gone and so is its lock.
    record = await store.current_lease()
    assert record is None
    taken = await store.acquire_lease("tester", ttl)
    assert taken.token == won["token"] + 1
    await store.release_lease("tester")


async def test_a_live_holder_that_stops_renewing_keeps_the_lease(tmp_path: Path) -> None:
    """FileStore never takes a session from a live process: past its TTL the holder is
    reported as expired-but-alive, and the lease frees when the holder lets go."""
    path = str(tmp_path / "bot.session")
    job = {"mode": "lease", "path": path, "holder": "stuck", "ttl": 0.2, "renew": False}
    store = FileStore(path)
    async with start_worker(job, tmp_path / "stuck.log") as holder:
        await holder.expect("ready")
        await holder.send("go")
        won = await holder.expect("won")
        await anyio.sleep(max(0.0, won["expires_at"] - time.time()) + 0.05)
        with pytest.raises(SessionInUseError, match=r"expired .* still holds the lock") as info:
            await store.acquire_lease("waiting", 10)
        assert info.value.holder == "stuck"
        assert info.value.expires_at is not None
        assert info.value.expires_at < time.time()
        await holder.send("release")
        await holder.expect("released")
        assert await holder.wait() == 0
    lease = await store.acquire_lease("waiting", 10)
    assert lease.token == won["token"] + 1
    await store.release_lease("waiting")


# Telethon -------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_a_new_process_resumes_the_session_and_catches_up(
    mtproto_server: MTProtoTestServer, tmp_path: Path, encrypted: bool
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    spec: dict[str, object] = {"kind": "file", "path": str(tmp_path / "bob" / "bob.session")}
    if encrypted:
        spec["key"] = ENC_KEY.hex()
    await run_login_then_resume(mtproto_server, tmp_path, spec, alice.id, bob.id, bob.phone)
    raw = (tmp_path / "bob" / "bob.session").read_bytes()
    assert raw.startswith(b"RTGE1") == encrypted


async def run_login_then_resume(
    server: MTProtoTestServer,
    tmp_path: Path,
    store_spec: dict[str, object],
    alice_id: int,
    bob_id: int,
    bob_phone: str,
) -> list[str]:
    """Log Bob in from one process; send him messages while no process runs; a second
    process with the same store is authorized at once and receives them. Returns the
    log text of both processes."""
    base = {"server": server_job(server), "store": store_spec}
    async with start_worker(
        {**base, "mode": "login", "phone": bob_phone}, tmp_path / "login.log"
    ) as first:
        assert (await first.expect("connected"))["authorized"] is False
        await first.expect("code_requested")
        await first.send(server.login_code(bob_phone))
        assert (await first.expect("logged_in"))["id"] == bob_id
        await first.expect("done")
        assert await first.wait() == 0
    sign_ins = len(server.requests_for("auth.signIn"))
    assert sign_ins == 1

    texts = [f"while away {i}" for i in range(3)]
    for text in texts:
        await server.send_message(alice_id, bob_id, text)

    async with start_worker(
        {**base, "mode": "resume", "expect_messages": len(texts)}, tmp_path / "resume.log"
    ) as second:
        resumed = await second.expect("resumed")
        assert resumed == {"event": "resumed", "authorized": True, "id": bob_id}
        assert (await second.expect("messages"))["texts"] == texts
        await second.expect("done")
        assert await second.wait() == 0
    assert len(server.requests_for("auth.signIn")) == sign_ins
    assert len(server.requests_for("auth.sendCode")) == 1
    logs = [(tmp_path / "login.log").read_text(), (tmp_path / "resume.log").read_text()]
    for log_text in logs:
        assert "Traceback" not in log_text
    return logs


# Telethon .session import ---------------------------------------------------------------


async def make_telethon_session_file(server: MTProtoTestServer, path: Path) -> int:
    """A real Telethon SQLiteSession file, logged in to the test server; returns the user id."""
    user = server.create_user("+15550009", "Tess", username="tessa")
    session = SQLiteSession(str(path))
    session.set_dc(server.dc_id, server.host, server.port)
    async with telethon_client(server, session=session) as client:
        await login(client, server, user)
        await client.get_me()
    session.close()
    return user.id


async def test_import_telethon_reads_a_real_session_file_without_touching_it(
    mtproto_server: MTProtoTestServer, tmp_path: Path
) -> None:
    telethon_file = tmp_path / "tess.session"
    user_id = await make_telethon_session_file(mtproto_server, telethon_file)
    telethon_file.chmod(0o644)
    before = (os.stat(telethon_file), telethon_file.read_bytes(), sorted(os.listdir(tmp_path)))
    hashed = hashlib.sha256(before[1]).hexdigest()

    data = await FileStore.import_telethon(telethon_file)

    after = os.stat(telethon_file)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        before[0].st_mtime_ns,
        before[0].st_size,
        before[0].st_ino,
    )
    assert hashlib.sha256(telethon_file.read_bytes()).hexdigest() == hashed
    assert sorted(os.listdir(tmp_path)) == before[2], "no journal or other file was created"
    assert mode(telethon_file) == 0o644

    reference = SQLiteSession(str(telethon_file))
    try:
        assert data.dc_id == reference.dc_id
        assert data.server_address == reference.server_address
        assert data.port == reference.port
        assert data.auth_key == reference.auth_key.key
        assert data.update_state is not None
        assert data.update_state.pts >= 1
        assert any(e.id == 0 and e.access_hash == user_id for e in data.entities)
        assert any(e.username == "tessa" for e in data.entities)
    finally:
        reference.close()

    # The imported session works: authorized, without logging in again.
    store = FileStore(tmp_path / "imported" / "tess.json")
    await store.save(data)
    session = await StoreSession.open(store)
    client = TelegramClient(session, mtproto_server.api_id, mtproto_server.api_hash)
    with anyio.fail_after(STEP_TIMEOUT):
        await client.connect()
        try:
            assert await client.is_user_authorized()
            me = await client.get_me()
            assert me.id == user_id
            assert await client.get_input_entity("tessa")
        finally:
            await client.disconnect()
            await session.aclose()
    assert len(mtproto_server.requests_for("auth.signIn")) == 1


async def test_import_telethon_refuses_what_is_not_a_telethon_session(tmp_path: Path) -> None:
    import sqlite3

    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    with pytest.raises(SessionCorruptError, match="not a SQLite database") as info:
        await FileStore.import_telethon(plain)
    assert str(plain) in str(info.value)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table t (x)")
    conn.close()
    with pytest.raises(SessionCorruptError, match="no Telethon"):
        await FileStore.import_telethon(other)

    empty = tmp_path / "empty.session"
    SQLiteSession(str(empty)).close()
    with pytest.raises(SessionCorruptError, match="holds no session"):
        await FileStore.import_telethon(empty)

    ours = tmp_path / "ours.session"
    await FileStore(ours).save(sample())
    with pytest.raises(SessionCorruptError, match="not a SQLite"):
        await FileStore.import_telethon(ours)

    with pytest.raises(FileNotFoundError):
        await FileStore.import_telethon(tmp_path / "missing.session")


async def test_import_telethon_reports_bad_values_by_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.session"
    session = SQLiteSession(str(path))
    session.set_dc(2, "127.0.0.1", 0)  # port 0 is not a port
    session.close()
    with pytest.raises(SessionCorruptError, match="port"):
        await FileStore.import_telethon(path)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cut=st.integers(min_value=0), noise=st.binary(max_size=64), position=st.integers(0))
async def test_a_damaged_telethon_file_is_a_session_corrupt_error(
    tmp_path: Path, cut: int, noise: bytes, position: int
) -> None:
    source = tmp_path / "good.session"
    if not source.exists():
        session = SQLiteSession(str(source))
        session.set_dc(2, "127.0.0.1", 443)
        session.auth_key = AuthKey(KEY)
        session.close()
    raw = bytearray(source.read_bytes())
    raw = raw[: 16 + cut % (len(raw) - 16)]
    at = position % max(1, len(raw))
    raw[at : at + len(noise)] = noise
    damaged = tmp_path / "damaged.session"
    damaged.write_bytes(bytes(raw))
    outcome: SessionData | SessionCorruptError
    try:
        outcome = await FileStore.import_telethon(damaged)
    except SessionCorruptError as exc:
        outcome = exc
    if isinstance(outcome, SessionCorruptError):
        for text in renderings(KEY):
            assert text not in str(outcome)
    else:
        assert isinstance(outcome, SessionData)
