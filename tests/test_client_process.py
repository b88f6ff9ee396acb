"""ResilientClient in real service processes: SIGTERM, and a rolling-deploy handover."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from resilient_tg.stores import FileStore, SessionData
from resilient_tg.testing import MTProtoTestServer, TestUser

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("client_worker.py")
ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """A client_worker.py process and the lines it printed, with arrival times."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[tuple[float, list[str]]] = []
        self._new = asyncio.Event()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                self.lines.append((time.time(), raw.decode().split(" ", 2)))
                self._new.set()

    async def wait_for(self, kind: str, arg: str | None = None, limit: float = 20) -> list[str]:
        with anyio.fail_after(limit):
            while True:
                for _, parts in self.lines:
                    if parts[0] == kind and (arg is None or parts[1:2] == [arg]):
                        return parts
                self._new.clear()
                await self._new.wait()

    async def until(self, predicate: Any, limit: float = 20) -> None:
        with anyio.fail_after(limit):
            while not predicate():
                self._new.clear()
                await self._new.wait()

    def messages(self) -> list[str]:
        return [" ".join(parts[1:]) for _, parts in self.lines if parts[0] == "MSG"]

    def states(self) -> list[str]:
        return [parts[1] for _, parts in self.lines if parts[0] == "STATE"]


async def start_worker(
    tg: anyio.abc.TaskGroup, server: MTProtoTestServer, session: Path, **extra: Any
) -> Worker:
    cfg = {
        "pem": server.public_key_pem,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
        "session": str(session),
        **extra,
    }
    env = {**os.environ, "WORKER_CONFIG": json.dumps(cfg), "PYTHONPATH": str(ROOT / "src")}
    process = await anyio.open_process(
        [sys.executable, str(WORKER)], env=env, stderr=None, stdout=-1
    )
    worker = Worker(process)
    tg.start_soon(worker.pump)
    return worker


async def seed_session(server: MTProtoTestServer, path: Path, user: TestUser) -> None:
    key = server.issue_auth_key(user.id)
    await FileStore(path).save(
        SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port, auth_key=key)
    )


async def stop(worker: Worker, limit: float = 10) -> int:
    worker.process.send_signal(signal.SIGTERM)
    with anyio.fail_after(limit):
        return await worker.process.wait()


@pytest.fixture
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as tg:
        yield tg
        tg.cancel_scope.cancel()


async def test_sigterm_exits_zero_in_time_with_the_session_flushed(
    mtproto_server: MTProtoTestServer, tmp_path: Path, task_group: anyio.abc.TaskGroup
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    session = tmp_path / "alice.session"
    await seed_session(mtproto_server, session, alice)
    worker = await start_worker(task_group, mtproto_server, session, shutdown_timeout=5.0)
    await worker.wait_for("READY")
    for i in range(5):
        await mtproto_server.send_message(bob.id, alice.id, f"hello {i}")
    await worker.until(lambda: len(worker.messages()) == 5)
    started = time.monotonic()
    code = await stop(worker)
    assert code == 0
    assert time.monotonic() - started < 5.0 + 2.0  # shutdown_timeout plus process exit
    await worker.wait_for("EXITED")
    # The update state on disk covers every handled message: a restart replays nothing.
    data = await FileStore(session).load()
    assert data is not None
    assert data.update_state is not None
    assert data.update_state.pts == mtproto_server._world.accounts[alice.id].pts
    assert sorted(worker.messages()) == [f"hello {i}" for i in range(5)]


async def test_rolling_deploy_hands_the_session_over_and_loses_nothing(
    mtproto_server: MTProtoTestServer, tmp_path: Path, task_group: anyio.abc.TaskGroup
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    session = tmp_path / "alice.session"
    await seed_session(mtproto_server, session, alice)
    old = await start_worker(task_group, mtproto_server, session)
    await old.wait_for("READY")

    sent: list[str] = []
    sending = True

    async def keep_sending() -> None:
        i = 0
        while sending:
            text = f"deploy {i}"
            await mtproto_server.send_message(bob.id, alice.id, text)
            sent.append(text)
            i += 1
            await anyio.sleep(0.02)

    task_group.start_soon(keep_sending)
    new = await start_worker(task_group, mtproto_server, session)
    # The new process waits on the lease, and its health says who holds it.
    await new.wait_for("STATE", "waiting_lease")
    assert not any(parts[0] == "LEASED" for _, parts in new.lines)
    await anyio.sleep(0.5)  # traffic flows to the old process meanwhile

    assert await stop(old) == 0
    exited = (await old.wait_for("EXITED"))[1]
    leased_at = float((await new.wait_for("LEASED"))[1])
    assert leased_at - float(exited) < 1.0  # taken over within 1 s of the release
    await new.wait_for("READY")
    await anyio.sleep(0.5)
    sending = False
    await anyio.sleep(0.05)
    await new.until(lambda: len(set(old.messages()) | set(new.messages())) >= len(sent), 15)
    assert await stop(new) == 0

    received = collections.Counter(old.messages() + new.messages())
    assert {t: received[t] for t in sent} == dict.fromkeys(sent, 1)  # all, and once
    assert new.messages(), "the new process received nothing"
    assert old.messages(), "the old process received nothing"
