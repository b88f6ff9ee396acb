"""Health publishing (status file, /health and /status) and `resilient-tg status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_tg import ResilientClient
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, running, seeded_store
from .conftest import wait_until
from .porttools import refused_port

pytestmark = pytest.mark.anyio

# Unhealthy is published within interval + timeout (detection) + 1 s (the write
# interval; a transition is written at once) + margin for a loaded CI machine.
DETECTION_BOUND = FAST_KEEPALIVE.interval + FAST_KEEPALIVE.timeout + 1.0 + 2.0
CLI = [sys.executable, "-m", "resilient_tg.cli", "status"]


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def published(path: Path, **expected: Any) -> bool:
    document = read_status(path)
    return document is not None and all(document.get(k) == v for k, v in expected.items())


async def http_get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}


async def status_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI in a subprocess, while this event loop keeps the client (and its server) alive."""
    with anyio.fail_after(30):
        return await anyio.run_process([*CLI, *args], check=False)


async def test_status_file_and_endpoint_follow_a_blackhole_and_its_healing(
    tmp_path: Path,
) -> None:
    status_file = tmp_path / "run" / "status.json"
    async with MTProtoTestServer() as server, FaultProxy(server.host, server.port) as proxy:
        alice = server.create_user("+15550001", "Alice")
        store = seeded_store(server, proxy.port, user=alice)
        async with running(
            store, server, status_file=status_file, status_address="127.0.0.1:0"
        ) as (client, _):
            url = client.status_url
            assert url is not None
            await client.wait_connected(20)
            await wait_until(lambda: published(status_file, healthy=True))
            document = read_status(status_file)
            assert document is not None
            assert document["pid"] == os.getpid()
            assert abs(document["written_at"] - time.time()) < 5
            assert document["state"] == "connected"
            assert (status_file.stat().st_mode & 0o777) == 0o644
            code, body = await http_get(url, "/health")
            assert code == 200
            assert body["healthy"] is True
            assert (await status_cli("--file", str(status_file))).returncode == 0
            assert (await status_cli("--url", url)).returncode == 0

            proxy.blackhole()
            started = time.monotonic()
            await wait_until(lambda: published(status_file, healthy=False), DETECTION_BOUND)
            assert time.monotonic() - started <= DETECTION_BOUND
            code, body = await http_get(url, "/health")
            assert code == 503
            assert body["healthy"] is False
            code, body = await http_get(url, "/status")
            assert code == 200
            assert body["healthy"] is False
            assert (await http_get(url, "/nope"))[0] == 404
            result = await status_cli("--file", str(status_file))
            assert result.returncode == 1
            assert b"unhealthy" in result.stderr
            result = await status_cli("--url", url)
            assert result.returncode == 1
            assert b"unhealthy" in result.stderr

            proxy.heal()
            await wait_until(lambda: published(status_file, healthy=True), 20)
            assert (await http_get(url, "/health"))[0] == 200
            assert (await status_cli("--file", str(status_file))).returncode == 0
            assert (await status_cli("--url", url, "--json")).returncode == 0

    # Leaving marks the file closed, leaves no temp file behind and closes the endpoint.
    assert published(status_file, state="closed", healthy=False)
    assert sorted(p.name for p in status_file.parent.iterdir()) == ["status.json"]
    result = await status_cli("--file", str(status_file))
    assert result.returncode == 1
    assert b"closed" in result.stderr
    result = await status_cli("--url", url)
    assert result.returncode == 1
    assert b"cannot reach" in result.stderr


def nowhere(port: int) -> MemoryStore:
    """A session pointing at a closed local port (never at Telegram)."""
    return MemoryStore(SessionData(dc_id=2, server_address="127.0.0.1", port=port))


async def test_status_file_is_written_at_least_every_second(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    status_file = tmp_path / "status.json"
    store = nowhere(unused_tcp_port)
    async with ResilientClient(store, 1, "hash", status_file=status_file):
        await wait_until(lambda: status_file.exists())
        first = read_status(status_file)
        assert first is not None
        await wait_until(
            lambda: (read_status(status_file) or first)["written_at"] > first["written_at"], 3
        )
        assert not (read_status(status_file) or {})["healthy"]
    assert published(status_file, state="closed", healthy=False)


async def test_status_address_must_be_host_and_port() -> None:
    with pytest.raises(ValueError, match="status_address"):
        ResilientClient(nowhere(1), 1, "hash", status_address="localhost")


async def test_status_endpoint_that_cannot_bind_fails_on_entering() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        client = ResilientClient(nowhere(1), 1, "hash", status_address=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=r"(?i)in use"):
            async with client:
                pass


def run_status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, check=False)


def write_status(path: Path, *, healthy: bool, age: float) -> None:
    document = {"state": "connected" if healthy else "reconnecting", "healthy": healthy}
    document.update(written_at=time.time() - age, pid=12345, detail="", rtt=0.01)
    path.write_text(json.dumps(document))


def test_status_cli_exit_codes_for_files(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, healthy=True, age=0.5)
    result = run_status("--file", str(path))
    assert result.returncode == 0, result.stderr
    assert "healthy" in result.stdout

    write_status(path, healthy=False, age=0.5)
    result = run_status("--file", str(path))
    assert result.returncode == 1
    assert "unhealthy: state reconnecting" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    write_status(path, healthy=True, age=60)
    result = run_status("--file", str(path))
    assert result.returncode == 1
    assert "stale" in result.stderr
    assert run_status("--file", str(path), "--max-age", "120").returncode == 0

    result = run_status("--file", str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert "no status file" in result.stderr

    path.write_text("{not json")
    assert run_status("--file", str(path)).returncode == 1

    write_status(path, healthy=True, age=0.5)
    result = run_status("--file", str(path), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["healthy"] is True


def test_status_cli_needs_exactly_one_source() -> None:
    assert run_status().returncode == 2
    assert run_status("--file", "a", "--url", "http://127.0.0.1:1").returncode == 2


def test_status_cli_reports_a_refused_connection(unused_tcp_port: int) -> None:
    result = run_status("--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr


@pytest.fixture
def unused_tcp_port() -> Iterator[int]:
    with refused_port() as port:
        yield port


def test_status_cli_live_mode_passes_while_reconnecting_and_fails_when_stopped(
    tmp_path: Path,
) -> None:
    """--live is a liveness probe: a reconnecting client is alive; a stale report or a
    final state is not (restarting the process is what helps then)."""
    path = tmp_path / "status.json"
    write_status(path, healthy=False, age=0.5)  # reconnecting
    result = run_status("--file", str(path), "--live")
    assert result.returncode == 0, result.stderr
    assert "alive: reconnecting" in result.stdout

    write_status(path, healthy=False, age=60)
    result = run_status("--file", str(path), "--live")
    assert result.returncode == 1
    assert "stale" in result.stderr

    document = json.loads(path.read_text())
    document.update(state="auth_lost", written_at=time.time(), detail="AUTH_KEY_UNREGISTERED")
    path.write_text(json.dumps(document))
    result = run_status("--file", str(path), "--live")
    assert result.returncode == 1
    assert "stopped for good: state auth_lost" in result.stderr
