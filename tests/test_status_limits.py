"""The status endpoint under idle-connection floods and broken listeners: it keeps
answering /health (a liveness probe must not restart a working client) and says in
health what went wrong."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from resilient_tg.testing import MTProtoTestServer

from .clienttools import running, seeded_store
from .conftest import wait_until
from .status_worker import ENV
from .store_worker import ROOT, Worker, server_job

pytestmark = pytest.mark.anyio

IDLE_CONNECTIONS = 400
# /health must answer within this (a loaded CI machine included).
ANSWER_BOUND = 10.0


async def get_health(url: str, limit: float = ANSWER_BOUND) -> int:
    """The status code of GET /health, retrying a refused or reset connection until
    ``limit``; fails the test if no answer comes by then."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with anyio.fail_after(limit):
        while True:
            try:
                async with await anyio.connect_tcp(host, int(port)) as stream:
                    await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    data = b""
                    while True:
                        try:
                            data += await stream.receive()
                        except anyio.EndOfStream:
                            break
                if data.startswith(b"HTTP/1.1 "):
                    return int(data.split()[1])
            except (OSError, anyio.BrokenResourceError):
                pass
            await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def idle_connections(url: str, count: int) -> AsyncIterator[list[socket.socket]]:
    """``count`` connections that never send a byte, closed when the block ends."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, int(port)))
            await anyio.wait_writable(sock)  # the kernel completed it (backlog or accepted)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@contextlib.asynccontextmanager
async def status_worker(
    server: MTProtoTestServer, log_path: Path, **limits: int
) -> AsyncIterator[Worker]:
    """The worker process; ``limit=N`` or ``spare=N`` sets its RLIMIT_NOFILE."""
    user = server.create_user("+15550001", "Alice")
    job = {
        "server": server_job(server),
        "auth_key": server.issue_auth_key(user.id).hex(),
        **limits,
    }
    with log_path.open("ab") as log_file:
        process = await anyio.open_process(
            [sys.executable, "-m", "tests.status_worker"],
            stdin=-1,
            stdout=-1,
            stderr=log_file,
            env={**os.environ, ENV: json.dumps(job)},
            cwd=ROOT,
        )
    worker = Worker(process, log_path)
    try:
        yield worker
    finally:
        worker.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


@pytest.mark.slow
async def test_health_answers_while_hundreds_of_idle_connections_are_open(
    tmp_path: Path,
) -> None:
    """With a 256-descriptor limit, 400 idle connections: the connection cap (the
    oldest idle one makes room) keeps /health answering, and no descriptor runs out."""
    async with (
        MTProtoTestServer() as server,
        status_worker(server, tmp_path / "worker.log", limit=256) as worker,
    ):
        ready = await worker.expect("ready")
        assert ready["open"] + 64 < 256, "the cap alone must keep it under the limit"
        url = ready["url"]
        assert (await worker.expect("status_error"))["error"] is None
        async with idle_connections(url, IDLE_CONNECTIONS):
            assert await get_health(url) == 200
            assert await get_health(url) == 200
        assert await get_health(url) == 200
        await worker.send("stop")
        assert await worker.expect("stopping") == {"event": "stopping", "healthy": True}
        assert await worker.wait() == 0
    assert "cannot accept" not in worker.log()


@pytest.mark.slow
async def test_health_recovers_after_descriptors_run_out(tmp_path: Path) -> None:
    """Only 12 descriptors to spare: accept() fails with EMFILE under 400 idle
    connections. The endpoint backs off and keeps accepting (closing idle connections
    to make room), health says what happened, and /health answers again within
    seconds once they close."""
    async with (
        MTProtoTestServer() as server,
        status_worker(server, tmp_path / "worker.log", spare=12) as worker,
    ):
        ready = await worker.expect("ready")
        url = ready["url"]
        assert (await worker.expect("status_error"))["error"] is None
        async with idle_connections(url, IDLE_CONNECTIONS):
            event = await worker.expect("status_error", timeout=ANSWER_BOUND)
            assert "could not accept connections" in event["error"]
            assert "Too many open files" in event["error"]
            assert event["healthy"] is True, "the link itself stays healthy"
            # Even now a probe gets through: idle connections make room for it.
            assert await get_health(url, 30) == 200
        closed_at = time.monotonic()
        assert await get_health(url) == 200
        assert time.monotonic() - closed_at < ANSWER_BOUND
        while True:  # the error clears once accept() works again
            event = await worker.expect("status_error", timeout=ANSWER_BOUND)
            if event["error"] is None:
                break
        await worker.send("stop")
        assert await worker.expect("stopping") == {"event": "stopping", "healthy": True}
        assert await worker.wait() == 0
    log_text = worker.log()
    assert "cannot accept connections (Too many open files" in log_text
    assert log_text.count("cannot accept connections") <= 5, "one warning per episode"
    assert "Traceback" not in log_text


def listening_socket(port: int) -> socket.socket:
    """This process's listening socket on ``port`` (a duplicate of its descriptor)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and sock.getsockname()[1] == port
            ):
                return sock
        except OSError:
            pass
        sock.close()
    raise AssertionError(f"no listening socket on port {port}")


async def test_a_broken_listener_is_restarted_on_the_same_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """shutdown() on the listening socket makes accept() fail for good (EINVAL): the
    endpoint says so and serves again on the same address."""
    caplog.set_level(logging.INFO, "resilient_tg.status")
    async with MTProtoTestServer() as server:
        store = seeded_store(server, user=server.create_user("+15550001", "Alice"))
        async with running(store, server, status_address="127.0.0.1:0") as (client, _):
            await client.wait_connected(20)
            await wait_until(lambda: client.health().healthy)
            url = client.status_url
            assert url is not None
            assert await get_health(url) == 200
            port = int(url.rsplit(":", 1)[1])
            with listening_socket(port) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            await wait_until(
                lambda: any(
                    "serving health on" in r.message and "again" in r.message
                    for r in caplog.records
                )
            )
            stopped = [r for r in caplog.records if "status endpoint stopped" in r.message]
            assert stopped, caplog.text
            assert "Invalid argument" in stopped[0].message
            assert client.status_url == url
            assert await get_health(url) == 200
            assert client.health().status_error is None


async def test_status_error_is_none_without_a_status_endpoint() -> None:
    async with MTProtoTestServer() as server:
        store = seeded_store(server)
        async with running(store, server) as (client, _):
            await client.wait_connected(20)
            health = client.health()
            assert health.status_error is None
            assert health.to_dict()["status_error"] is None
