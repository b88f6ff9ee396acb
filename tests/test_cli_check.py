"""`resilient-tg check STORE_URL`: a one-shot connect in a subprocess, against a test
server running in this process (its key passed with --test-server-key)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from resilient_tg import ResilientClient
from resilient_tg.stores import FileStore, SessionData, UpdateState
from resilient_tg.testing import MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT
from .porttools import refused_port

pytestmark = pytest.mark.anyio


async def check(
    server: MTProtoTestServer, tmp_path: Path, store: Path | str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI while this event loop keeps the server answering."""
    pem = tmp_path / "server.pem"
    pem.write_text(server.public_key_pem)
    command = [sys.executable, "-m", "resilient_tg.cli", "check", str(store)]
    command += ["--api-id", str(server.api_id), "--api-hash", server.api_hash]
    command += ["--test-server-key", str(pem), "--timeout", "10", *args]
    with anyio.fail_after(60):
        return await anyio.run_process(command, check=False)


async def seed(
    server: MTProtoTestServer,
    path: Path,
    *,
    user_id: int | None,
    logged_in_before: bool = False,
    port: int | None = None,
) -> Path:
    """A session file holding a key the server issued (for ``user_id``, if given)."""
    key = server.issue_auth_key(user_id)
    await FileStore(path).save(
        SessionData(
            dc_id=server.dc_id,
            server_address=server.host,
            port=port or server.port,
            auth_key=key,
            ever_authorized=logged_in_before,
            update_state=UpdateState(pts=7, qts=1, date=1_700_000_000, seq=2)
            if logged_in_before
            else None,
        )
    )
    return path


async def test_check_of_an_authorized_session_is_healthy(tmp_path: Path) -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        path = await seed(server, tmp_path / "alice.session", user_id=alice.id)
        result = await check(server, tmp_path, path.as_uri())
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert "state       connected" in out
        assert "healthy     yes" in out
        assert server.api_hash not in out + result.stderr.decode()

        result = await check(server, tmp_path, path, "--json")  # a plain path works too
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["ok"] is True
        assert document["health"]["healthy"] is True
        assert document["health"]["authorized"] is True
    # Released: the lease can be taken again at once.
    store = FileStore(path)
    await store.acquire_lease("test", 5)
    await store.release_lease("test")
    await store.aclose()


async def test_check_of_a_session_not_logged_in_exits_1(tmp_path: Path) -> None:
    async with MTProtoTestServer() as server:
        path = await seed(server, tmp_path / "anon.session", user_id=None)
        result = await check(server, tmp_path, path.as_uri())
        assert result.returncode == 1, result.stderr
        assert b"not logged in" in result.stderr
        assert b"authorized  no" in result.stdout


async def test_check_of_a_revoked_key_exits_4(tmp_path: Path) -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        path = await seed(server, tmp_path / "a.session", user_id=alice.id, logged_in_before=True)
        server.revoke_auth_keys(alice.id)
        before = path.read_bytes()
        result = await check(server, tmp_path, path.as_uri(), "--json")
        assert result.returncode == 4, result.stderr
        assert b"AUTH_KEY_UNREGISTERED" in result.stderr
        assert json.loads(result.stdout)["health"]["state"] == "auth_lost"
        assert path.read_bytes() == before  # AUTH_LOST writes nothing


async def test_check_with_a_wrong_api_id_exits_6_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        path = await seed(server, tmp_path / "a.session", user_id=alice.id, logged_in_before=True)
        before = path.read_bytes()
        started = time.monotonic()
        wrong = str(server.api_id + 1)
        result = await check(
            server, tmp_path, path.as_uri(), "--api-id", wrong, "--timeout", "30", "--json"
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 6, result.stderr
        assert b"API_ID_INVALID" in result.stderr
        assert b"api_id/api_hash" in result.stderr
        assert json.loads(result.stdout)["health"]["state"] == "rejected"
        assert elapsed < 15  # not the 30 s --timeout: the refusal is final at once
        assert path.read_bytes() == before  # REJECTED writes nothing


async def test_check_of_a_session_leased_by_a_live_client_exits_3(tmp_path: Path) -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        path = await seed(server, tmp_path / "alice.session", user_id=alice.id)
        async with ResilientClient(
            FileStore(path),
            server.api_id,
            server.api_hash,
            keepalive=FAST_KEEPALIVE,
            reconnect=FAST_RECONNECT,
            holder="service-1",
        ) as client:
            await client.wait_connected(20)
            result = await check(server, tmp_path, path.as_uri())
            assert result.returncode == 3, result.stderr
            assert b"in use by service-1" in result.stderr
            assert client.health().healthy  # left alone


async def test_check_of_an_unreachable_server_exits_5_within_the_timeout(tmp_path: Path) -> None:
    with refused_port() as closed_port:
        async with MTProtoTestServer() as server:
            alice = server.create_user("+15550001", "Alice")
            path = await seed(
                server,
                tmp_path / "alice.session",
                user_id=alice.id,
                port=closed_port,
                logged_in_before=True,
            )
            before = await FileStore(path).load()
            started = time.monotonic()
            result = await check(server, tmp_path, path.as_uri(), "--timeout", "2")
            elapsed = time.monotonic() - started
            assert result.returncode == 5, result.stderr
            assert b"could not connect" in result.stderr
            assert elapsed < 2 + 8  # the timeout, a bounded shutdown and interpreter start-up
        # It never connected: the stored update state is exactly as it was (not pts 0).
        after = await FileStore(path).load()
        assert after is not None
        assert before is not None
        assert after.update_state == before.update_state
        assert after.ever_authorized is True


async def test_check_of_a_corrupt_or_empty_store_exits_3(tmp_path: Path) -> None:
    async with MTProtoTestServer() as server:
        corrupt = tmp_path / "corrupt.session"
        corrupt.write_bytes(b"\x00not a session")
        corrupt.chmod(0o600)
        result = await check(server, tmp_path, corrupt.as_uri())
        assert result.returncode == 3, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

        result = await check(server, tmp_path, (tmp_path / "nothing.session").as_uri())
        assert result.returncode == 3
        assert b"holds no session" in result.stderr


def test_check_needs_api_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TG_API_ID", raising=False)
    monkeypatch.delenv("TG_API_HASH", raising=False)
    result = subprocess.run(
        [sys.executable, "-m", "resilient_tg.cli", "check", "memory://"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--api-id" in result.stderr
