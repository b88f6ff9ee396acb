"""ResilientClient in real service processes: SIGTERM, and a rolling-deploy handover."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from telethon.crypto import AuthKey

from resilient_tg import ConnectionState, ResilientClient
from resilient_tg.stores import FileStore, SessionData, open_store
from resilient_tg.testing import MTProtoTestServer, TestUser

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT
from .conftest import STEP_TIMEOUT, wait_until

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

    def packed(self, lease: str) -> list[str]:
        """The messages Telethon took to send while the lease was ``held`` or "unheld"."""
        return [parts[2] for _, parts in self.lines if parts[0] == "PACKED" and parts[1] == lease]


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
    _STARTED.append(process)
    tg.start_soon(worker.pump)
    return worker


_STARTED: list[Process] = []


@pytest.fixture(autouse=True)
def _no_worker_left_behind() -> Iterator[None]:
    """A test that fails halfway leaves no worker running (they do not watch for us)."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is None:
            process.kill()


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


async def test_a_first_process_killed_right_after_connected_leaves_a_pts_to_catch_up_from(
    mtproto_server: MTProtoTestServer, tmp_path: Path, task_group: anyio.abc.TaskGroup
) -> None:
    """A brand-new session (no update state stored yet) stores its pts before CONNECTED:
    a process killed at once does not leave the next one to start from "now" and skip
    everything sent in between."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    session = tmp_path / "alice.session"
    await seed_session(mtproto_server, session, alice)
    first = await start_worker(task_group, mtproto_server, session)
    await first.wait_for("READY")
    first.process.kill()
    await first.process.wait()

    sent = [f"while down {i}" for i in range(5)]
    for text in sent:
        await mtproto_server.send_message(bob.id, alice.id, text)
    second = await start_worker(task_group, mtproto_server, session)
    await second.wait_for("READY", limit=STEP_TIMEOUT + 5)  # after the first's lease ran out
    await second.until(lambda: set(sent) <= set(second.messages()), STEP_TIMEOUT)
    second.process.kill()
    await second.process.wait()


def _database_idle(path: Path) -> bool:
    """Whether no process holds SQLite's write lock on ``path`` now (every SQLStore
    transaction takes it at BEGIN): a process stopped inside one would keep others out."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return True


def _is_stopped(pid: int) -> bool:
    """Whether the kernel has stopped ``pid`` yet (a signal is delivered asynchronously);
    True where there is no procfs to ask."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


async def _stop_between_transactions(worker: Worker, database: Path) -> None:
    """SIGSTOP ``worker`` at a moment it holds no transaction open."""
    while True:
        worker.process.send_signal(signal.SIGSTOP)
        await wait_until(lambda: _is_stopped(worker.process.pid), 5)
        if _database_idle(database):
            return
        worker.process.send_signal(signal.SIGCONT)
        await anyio.sleep(0.02)  # let it commit, then try again


async def test_a_worker_paused_past_its_lease_drops_it_before_touching_a_link(
    mtproto_server: MTProtoTestServer, tmp_path: Path, task_group: anyio.abc.TaskGroup
) -> None:
    """SIGSTOP a connected worker until its lease expires and another holder connects with
    the same key, then SIGCONT it: it reports the lease lost and opens no link (no TCP
    connect, nothing sent with the key) while the other holds the lease; the server never
    sees the key on two links at once."""
    ttl = 3.0
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    key_id = AuthKey(key).key_id
    database = tmp_path / "sessions.db"
    url = f"sqlite:///{database}?name=alice"
    async with open_store(url) as store:
        await store.save(
            SessionData(
                dc_id=mtproto_server.dc_id,
                server_address=mtproto_server.host,
                port=mtproto_server.port,
                auth_key=key,
            )
        )
    worker = await start_worker(
        task_group,
        mtproto_server,
        tmp_path / "unused.session",
        store_url=url,
        lease_ttl=ttl,
        holder="paused-worker",
        watch_lease=True,
    )
    await worker.wait_for("READY")
    assert mtproto_server.open_links(key_id) == 1
    async with open_store(url) as store:
        held = await store.current_lease()
    assert held is not None
    assert held.holder == "paused-worker"
    paused_token = held.token

    await _stop_between_transactions(worker, database)
    try:
        # Its link sent no ping since: the server drops it (ping_delay_disconnect).
        await wait_until(lambda: mtproto_server.open_links(key_id) == 0)
        second = ResilientClient(
            url,
            mtproto_server.api_id,
            mtproto_server.api_hash,
            keepalive=FAST_KEEPALIVE,
            reconnect=FAST_RECONNECT,
            lease_ttl=ttl,
            holder="second-holder",
        )
        async with second:  # taken once the paused worker's lease expired
            await second.wait_connected(STEP_TIMEOUT)
            async with open_store(url) as store:
                taken = await store.current_lease()
            assert taken is not None
            assert taken.holder == "second-holder"
            assert taken.token > paused_token  # taken over: the pause outlasted the lease
            assert mtproto_server.open_links(key_id) == 1
            links = mtproto_server.links_total
            seen = len(worker.states())
            worker.process.send_signal(signal.SIGCONT)
            lost = await worker.wait_for("STATE", "waiting_lease")
            assert lost[2].startswith("lease lost"), lost
            # It has tried to take the lease back and was told who holds it.
            await worker.wait_for("LEASE", "second-holder")
            assert mtproto_server.links_total == links, "the resumed worker opened a link"
            assert mtproto_server.open_links(key_id) == 1
            assert second.state is ConnectionState.CONNECTED
            assert "connecting" not in worker.states()[seen:]
            # Nothing was handed to its old link either (not even a keepalive ping).
            assert worker.packed("unheld") == []
        # Released: the worker takes the lease back and connects again.
        await worker.until(lambda: worker.states().count("connected") >= 2)
        assert mtproto_server.open_links(key_id) == 1
        assert mtproto_server.max_links_per_key() == 1
        assert worker.packed("unheld") == []
        assert "PingDelayDisconnectRequest" in worker.packed("held")  # the trace works
        assert await stop(worker) == 0
    finally:
        if worker.process.returncode is None:  # failed midway (maybe stopped): end it
            worker.process.kill()
            await worker.process.wait()
