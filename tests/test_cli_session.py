"""`resilient-tg session export|import|copy`: round trips between stores, Telethon
.session files and StringSession strings, with the secrets kept where they belong."""

from __future__ import annotations

import base64
import io
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from resilient_tg import ResilientClient
from resilient_tg.cli import main
from resilient_tg.stores import FileStore, SessionData, open_store
from resilient_tg.testing import MTProtoTestServer, TestUser

from .clienttools import log_in, running
from .conftest import STEP_TIMEOUT

pytestmark = pytest.mark.anyio


class Cli:
    """Runs ``resilient-tg`` in a worker thread (it has its own event loop) while the
    test's loop serves the test server; collects everything it wrote to stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.stderr = ""

    async def __call__(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        self._capsys.readouterr()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = await anyio.to_thread.run_sync(main, list(argv))
        finally:
            sys.stdin = saved
        captured = self._capsys.readouterr()
        self.stderr += captured.err
        return code, captured.out, captured.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture
async def server() -> AsyncIterator[MTProtoTestServer]:
    async with MTProtoTestServer() as srv:
        yield srv


async def logged_in(server: MTProtoTestServer, path: Path, phone: str) -> tuple[TestUser, bytes]:
    """A FileStore holding a real login (key, update state, entities), as a service leaves it."""
    user = server.create_user(phone, f"User {phone[-4:]}", username=f"user{phone[-4:]}")
    store = FileStore(path)
    await store.save(SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port))
    async with running(store, server) as (client, _):
        await client.wait_connected(STEP_TIMEOUT)
        await log_in(client, server, user)
        await client.telegram.get_me()
    data = await store.load()
    assert data is not None
    assert data.auth_key is not None
    return user, data.auth_key


async def authorized_as(server: MTProtoTestServer, url: str) -> int:
    """Connect with the store's session; the user id it is logged in as (0 if none)."""
    async with ResilientClient(open_store(url), server.api_id, server.api_hash) as client:
        await client.wait_connected(STEP_TIMEOUT)
        if not client.health().authorized:
            return 0
        return int((await client.telegram.get_me()).id)


def assert_secret_free(text: str, key: bytes) -> None:
    for form in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert form not in text
        assert form[:40] not in text


async def test_round_trip_through_every_format_stays_logged_in(
    server: MTProtoTestServer, tmp_path: Path, cli: Cli
) -> None:
    source = tmp_path / "source.json"
    user, key = await logged_in(server, source, "+15550001")
    db = f"sqlite:///{tmp_path}/sessions.db"

    # file:// -> StringSession on stdout -> sqlite (name=one)
    code, string, _ = await cli("session", "export", source.as_uri(), "--string", "--stdout")
    assert code == 0
    assert string.startswith("1")
    code, out, err = await cli(
        "session", "import", "--string-stdin", f"{db}?name=one", stdin=string
    )
    assert code == 0, err
    assert "imported the session" in out
    assert string.strip() not in out + err

    # sqlite -> Telethon .session -> file://
    telethon_file = tmp_path / "exported.session"
    code, out, err = await cli(
        "session", "export", f"{db}?name=one", "--telethon", str(telethon_file)
    )
    assert code == 0, err
    assert out == ""
    assert telethon_file.stat().st_mode & 0o777 == 0o600
    from_telethon = tmp_path / "from_telethon.json"
    code, _, err = await cli("session", "import", str(telethon_file), from_telethon.as_uri())
    assert code == 0, err

    # file:// -> sqlite (name=two) by copy -> JSON file -> file://
    code, _, err = await cli("session", "copy", from_telethon.as_uri(), f"{db}?name=two")
    assert code == 0, err
    json_file = tmp_path / "exported.json"
    code, out, err = await cli(
        "session", "export", f"{db}?name=two", "--json", "--output", str(json_file)
    )
    assert code == 0, err
    assert out == ""
    assert json_file.stat().st_mode & 0o777 == 0o600
    final = tmp_path / "final.json"
    code, _, err = await cli("session", "import", str(json_file), final.as_uri())
    assert code == 0, err

    for url in (f"{db}?name=one", f"{db}?name=two", from_telethon.as_uri(), final.as_uri()):
        store = open_store(url)
        data = await store.load()
        await store.aclose()
        assert data is not None
        assert data.auth_key == key
        assert (data.server_address, data.port) == (server.host, server.port)
    assert await authorized_as(server, final.as_uri()) == user.id
    assert await authorized_as(server, f"{db}?name=one") == user.id
    assert_secret_free(cli.stderr, key)


async def test_telethon_file_keeps_update_state_and_entities_and_telethon_can_use_it(
    server: MTProtoTestServer, tmp_path: Path, cli: Cli
) -> None:
    source = tmp_path / "source.json"
    user, _ = await logged_in(server, source, "+15550001")
    original = await FileStore(source).load()
    assert original is not None
    assert original.update_state is not None
    assert original.entities
    telethon_file = tmp_path / "bot.session"
    assert (await cli("session", "export", source.as_uri(), "--telethon", str(telethon_file)))[
        0
    ] == 0
    with sqlite3.connect(telethon_file) as conn:  # Telethon's own schema
        assert conn.execute("select version from version").fetchone()[0] >= 7
    conn.close()
    back = await FileStore.import_telethon(telethon_file)
    assert back.auth_key == original.auth_key
    assert back.update_state == original.update_state
    assert set(back.entities) == set(original.entities)

    # An unmodified Telethon client resumes from the exported file.
    from telethon import TelegramClient

    client = TelegramClient(str(telethon_file), server.api_id, server.api_hash)
    with anyio.fail_after(STEP_TIMEOUT):
        await client.connect()
        try:
            assert (await client.get_me()).id == user.id
        finally:
            await client.disconnect()


async def test_export_refuses_to_print_a_secret_unless_asked(
    server: MTProtoTestServer, tmp_path: Path, cli: Cli
) -> None:
    source = tmp_path / "source.json"
    _, key = await logged_in(server, source, "+15550001")
    for fmt in ("--string", "--json"):
        code, out, err = await cli("session", "export", source.as_uri(), fmt)
        assert code == 2
        assert out == ""
        assert "--stdout" in err
        assert "--output" in err
    existing = tmp_path / "taken.txt"
    existing.write_text("keep me")
    existing.chmod(0o644)
    code, _, err = await cli(
        "session", "export", source.as_uri(), "--string", "--output", str(existing)
    )
    assert code == 3  # as for a store that holds a session: the target's state
    assert "--force" in err
    assert existing.read_text() == "keep me"
    code, _, err = await cli(
        "session", "export", source.as_uri(), "--string", "--output", str(existing), "--force"
    )
    assert code == 0, err
    assert existing.read_text().startswith("1")
    assert existing.stat().st_mode & 0o777 == 0o600
    code, out, _ = await cli("session", "export", source.as_uri(), "--json", "--stdout")
    assert code == 0
    assert '"auth_key"' in out
    assert_secret_free(cli.stderr, key)


async def test_import_refuses_to_replace_a_session_without_force(
    server: MTProtoTestServer, tmp_path: Path, cli: Cli
) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    await logged_in(server, first, "+15550001")
    bob, bob_key = await logged_in(server, second, "+15550002")
    code, _, err = await cli("session", "copy", second.as_uri(), first.as_uri())
    assert code == 3
    assert "already holds a session" in err
    assert "--force" in err
    code, _, err = await cli("session", "copy", second.as_uri(), first.as_uri(), "--force")
    assert code == 0, err
    data = await FileStore(first).load()
    assert data is not None
    assert data.auth_key == bob_key
    assert await authorized_as(server, first.as_uri()) == bob.id


async def test_copy_takes_both_leases(server: MTProtoTestServer, tmp_path: Path, cli: Cli) -> None:
    source, target = tmp_path / "source.json", tmp_path / "target.json"
    await logged_in(server, source, "+15550001")
    for held in (source, target):
        store = FileStore(held)
        await store.acquire_lease("worker-3:999:beef", 60.0)
        try:
            code, _, err = await cli("session", "copy", source.as_uri(), target.as_uri())
            if held is source:  # exporting is allowed, with a warning
                exported, _, warning = await cli(
                    "session", "export", source.as_uri(), "--json", "--stdout"
                )
                assert exported == 0
                assert "warning: worker-3:999:beef is using this session" in warning
        finally:
            await store.release_lease("worker-3:999:beef")
        assert code == 3
        assert "worker-3:999:beef" in err
    assert await FileStore(target).load() is None
    assert (await cli("session", "copy", source.as_uri(), target.as_uri()))[0] == 0


async def test_corrupt_sources_exit_3_without_echoing_them(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b'{"format": "resilient_tg.session", "version": 1, "auth_key": "AAAA')
    code, out, err = await cli("session", "export", garbage.as_uri(), "--json", "--stdout")
    assert (code, out) == (3, "")
    assert "not a session document" in err
    assert "AAAA" not in err

    fake = tmp_path / "fake.session"
    fake.write_bytes(b"SQLite format 3\x00" + b"\x01" * 200)
    code, _, err = await cli("session", "import", str(fake), (tmp_path / "x.json").as_uri())
    assert code == 3
    assert str(fake) in err

    bad_string = "1" + "QUJD" * 20
    monkeypatch.setenv("TG_SESSION", bad_string)
    code, _, err = await cli(
        "session", "import", "--string-env", "TG_SESSION", (tmp_path / "y.json").as_uri()
    )
    assert code == 3
    assert "$TG_SESSION" in err
    assert bad_string not in err

    code, _, err = await cli(
        "session", "import", str(tmp_path / "missing.session"), (tmp_path / "z.json").as_uri()
    )
    assert code == 3
    assert "no such file" in err
    assert not (tmp_path / "x.json").exists()
    assert not (tmp_path / "y.json").exists()


async def test_empty_or_keyless_sources_and_bad_targets_are_refused(
    tmp_path: Path, cli: Cli
) -> None:
    empty = tmp_path / "empty.json"
    code, _, err = await cli("session", "export", empty.as_uri(), "--string", "--stdout")
    assert code == 3
    assert "holds no session" in err
    await FileStore(empty).save(SessionData(dc_id=2, server_address="127.0.0.1", port=1))
    code, _, err = await cli("session", "copy", empty.as_uri(), (tmp_path / "t.json").as_uri())
    assert code == 3
    assert "without an auth key" in err
    code, _, err = await cli("session", "copy", empty.as_uri(), "memory://")
    assert code == 2
    code, _, err = await cli("session", "copy", empty.as_uri(), "env://TG_SESSION")
    assert code == 2
    assert "cannot be written" in err
    code, _, err = await cli("session", "import", str(empty))
    assert code == 2
    assert "SOURCE STORE_URL" in err
