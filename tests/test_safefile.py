"""Links planted at the paths FileStore and the status file open are never followed, and
a session directory others can write is refused (unless FileStore is told otherwise)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from resilient_tg import SessionCorruptError, SessionInUseError
from resilient_tg.stores import FileStore, SessionData
from resilient_tg.testing import MTProtoTestServer

from .clienttools import running, seeded_store
from .conftest import wait_until
from .store_worker import start_worker

pytestmark = pytest.mark.anyio

VICTIM_TEXT = b"precious data that belongs to someone else\n"


def plant_victim(directory: Path) -> tuple[Path, os.stat_result]:
    """A file outside the session's directory a link will point at; 0644 on purpose."""
    directory.mkdir(mode=0o700, exist_ok=True)
    victim = directory / "victim.txt"
    victim.write_bytes(VICTIM_TEXT)
    os.chmod(victim, 0o644)
    return victim, victim.stat()


def assert_untouched(victim: Path, before: os.stat_result) -> None:
    after = victim.stat()
    assert victim.read_bytes() == VICTIM_TEXT, "the link's target was written or truncated"
    assert stat.S_IMODE(after.st_mode) == 0o644, "the link's target was chmod-ed"
    assert after.st_mtime_ns == before.st_mtime_ns
    assert after.st_size == before.st_size


def private_dir(tmp_path: Path, name: str = "sessions") -> Path:
    directory = tmp_path / name
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def session_data() -> SessionData:
    return SessionData(dc_id=2, server_address="127.0.0.1", port=443, auth_key=os.urandom(256))


async def test_a_link_at_the_session_path_is_refused_and_its_target_left_alone(
    tmp_path: Path,
) -> None:
    victim, before = plant_victim(tmp_path / "elsewhere")
    path = private_dir(tmp_path) / "bot.session"
    path.symlink_to(victim)
    store = FileStore(path)
    with pytest.raises(SessionCorruptError, match="is a symbolic link") as info:
        await store.load()
    assert str(path) in str(info.value)
    with pytest.raises(PermissionError, match=r"session file is a symbolic link") as raised:
        await store.save(session_data())
    assert str(raised.value).startswith(f"{store.describe()}: ")
    with pytest.raises(PermissionError, match=r"session file is a symbolic link"):
        await store.save(session_data())
    assert path.is_symlink(), "the link was replaced instead of refused"
    assert_untouched(victim, before)


@pytest.mark.parametrize("dangling", [False, True], ids=["to_a_file", "dangling"])
async def test_a_link_at_the_lock_path_is_refused_and_its_target_left_alone(
    tmp_path: Path, dangling: bool
) -> None:
    victim, before = plant_victim(tmp_path / "elsewhere")
    path = private_dir(tmp_path) / "bot.session"
    lock = path.with_name("bot.session.lock")
    target = tmp_path / "elsewhere" / "created-by-us" if dangling else victim
    lock.symlink_to(target)
    store = FileStore(path)
    with pytest.raises(PermissionError, match=r"lock file .* is a symbolic link") as info:
        await store.acquire_lease("me", 10)
    assert str(info.value).count(str(lock)) == 1
    assert str(info.value).startswith(f"{store.describe()}: the lock file ")
    with pytest.raises(PermissionError, match=r"lock file .* is a symbolic link"):
        await store.current_lease()
    assert lock.is_symlink()
    assert not (tmp_path / "elsewhere" / "created-by-us").exists(), "a link target was created"
    assert_untouched(victim, before)


async def test_links_at_temp_paths_are_never_followed_nor_removed_through(
    tmp_path: Path,
) -> None:
    """Temp names are random and created O_EXCL|O_NOFOLLOW; links planted under the temp
    prefix (as a sweep of abandoned temp files sees them) are left alone."""
    victim, before = plant_victim(tmp_path / "elsewhere")
    directory = private_dir(tmp_path)
    path = directory / "bot.session"
    planted = [directory / f".bot.session.tmp.{os.getpid()}.{i:016x}" for i in range(3)] + [
        directory / ".bot.session.tmp.1.0000000000000000"
    ]
    for link in planted:
        link.symlink_to(victim)
    store = FileStore(path)
    data = session_data()
    for _ in range(3):
        await store.save(data)
    assert await store.load() == data
    assert_untouched(victim, before)
    for link in planted:
        assert link.is_symlink()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777], ids=["0777", "0770", "sticky_1777"])
async def test_a_session_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, mode)
    path = directory / "bot.session"
    store = FileStore(path)
    message = r"session's directory .*shared is writable by .*allow_shared_dir=True"
    with pytest.raises(PermissionError, match=message) as info:
        await store.load()
    assert str(info.value).startswith(f"{store.describe()}: ")
    with pytest.raises(PermissionError, match=message):
        await store.save(session_data())
    with pytest.raises(PermissionError, match=message):
        await store.acquire_lease("me", 10)
    assert sorted(os.listdir(directory)) == [], "a refused store wrote something"


async def test_a_shared_directory_is_accepted_when_allowed(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    store = FileStore(directory / "bot.session", allow_shared_dir=True)
    data = session_data()
    await store.save(data)
    assert await store.load() == data
    lease = await store.acquire_lease("me", 10)
    assert lease.holder == "me"
    await store.release_lease("me")
    assert stat.S_IMODE(os.stat(directory / "bot.session").st_mode) == 0o600


async def test_a_file_lease_held_by_another_process_is_described_as_lasting_while_it_lives(
    tmp_path: Path,
) -> None:
    """A FileStore lease lasts while its holder's process lives; the error says so and
    does not promise a time the lease would run out."""
    path = str(private_dir(tmp_path) / "bot.session")
    job = {"mode": "lease", "path": path, "holder": "other", "ttl": 30, "renew": False}
    store = FileStore(path)
    async with start_worker(job, tmp_path / "holder.log") as holder:
        await holder.expect("ready")
        await holder.send("go")
        await holder.expect("won")
        with pytest.raises(SessionInUseError) as info:
            await store.acquire_lease("waiting", 10)
        text = str(info.value)
        assert "for another" not in text
        assert "lasts as long as its process runs" in text
        assert "bot.session.lock" in text
        assert info.value.holder == "other"
        await holder.send("release")
        await holder.expect("released")
        assert await holder.wait() == 0


async def test_a_lease_held_in_this_process_is_described_by_its_ttl(tmp_path: Path) -> None:
    path = private_dir(tmp_path) / "bot.session"
    first, second = FileStore(path), FileStore(path)
    await first.acquire_lease("first", 30)
    with pytest.raises(SessionInUseError, match=r"in this process, until its lease expires in"):
        await second.acquire_lease("second", 10)
    await first.release_lease("first")


# The status file --------------------------------------------------------------------------


async def test_links_at_the_status_file_and_its_temp_paths_are_never_followed(
    tmp_path: Path,
) -> None:
    victim, before = plant_victim(tmp_path / "elsewhere")
    run = tmp_path / "run"
    run.mkdir()
    status_file = run / "status.json"
    status_file.symlink_to(victim)
    # The temp name the status file used to have (predictable), and the shared
    # routine's prefix: neither is followed.
    planted = [run / f".status.json.{os.getpid()}.tmp", run / ".status.json.tmp.1.00"]
    for link in planted:
        link.symlink_to(victim)
    async with MTProtoTestServer() as server:
        store = seeded_store(server)
        async with running(store, server, status_file=status_file) as (client, _):
            await client.wait_connected(20)
            await wait_until(lambda: client.health().status_error is not None)
            error = client.health().status_error
            assert error is not None
            assert "status file" in error
            assert "symbolic link" in error
            assert client.health().to_dict()["status_error"] == error
            # The rest of the client is unaffected.
            assert client.health().connected
            # Replace the link by hand: the next write succeeds and the error clears.
            status_file.unlink()
            await wait_until(lambda: client.health().status_error is None)
            await wait_until(status_file.exists)
    assert_untouched(victim, before)
    for link in planted:
        assert link.is_symlink()
    assert not status_file.is_symlink()
    assert b'"state": "closed"' in status_file.read_bytes()


async def test_a_status_file_write_failure_clears_once_writes_work(tmp_path: Path) -> None:
    """A status file that cannot be written shows in health (and only there: the link
    stays healthy) until it can be written again."""
    run = tmp_path / "run"
    run.mkdir()
    blocker = run / "status.json"
    blocker.mkdir()  # a directory where the file should be: os.replace fails
    async with MTProtoTestServer() as server:
        store = seeded_store(server)
        async with running(store, server, status_file=blocker) as (client, _):
            await client.wait_connected(20)
            await wait_until(lambda: client.health().status_error is not None)
            assert "cannot write the status file" in (client.health().status_error or "")
            blocker.rmdir()
            started = time.monotonic()
            await wait_until(lambda: client.health().status_error is None)
            assert time.monotonic() - started < 10
            await wait_until(blocker.is_file)


async def test_a_store_url_can_accept_a_shared_directory(tmp_path: Path) -> None:
    from resilient_tg.stores import open_store

    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    path = directory / "bot.session"
    with pytest.raises(PermissionError, match="allow_shared_dir"):
        await open_store(f"file://{path}").save(session_data())
    await open_store(f"file://{path}?allow_shared_dir=1").save(session_data())
    assert path.is_file()
    with pytest.raises(ValueError, match="allow_shared_dir must be 1 or 0"):
        open_store(f"file://{path}?allow_shared_dir=maybe")
