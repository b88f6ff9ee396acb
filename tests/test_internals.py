"""The small concurrency pieces the client is built from: Flag, TaskSet, the dispatcher.

They exist to keep a client cheap (see benchmarks/fleet.py), so besides their
behaviour the tests pin what an idle client holds: its own tasks, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
import pytest

from resilient_tg import ConnectionState, ResilientClient, StateChange, StateReason
from resilient_tg._callbacks import CallbackRegistry
from resilient_tg._deadlines import Deadlines
from resilient_tg._flag import Flag
from resilient_tg._tasks import TaskSet
from resilient_tg.testing import MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, seeded_store

pytestmark = pytest.mark.anyio


async def test_flag_set_wakes_every_waiter_even_if_cleared_at_once() -> None:
    flag = Flag()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await flag.wait()
        woken.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert not flag.is_set()
    flag.set()
    flag.clear()
    with anyio.fail_after(5):
        await asyncio.gather(*tasks)
    assert sorted(woken) == [0, 1, 2]
    assert not flag.is_set()


async def test_flag_wait_returns_at_once_when_set_and_forgets_cancelled_waiters() -> None:
    flag = Flag()
    with anyio.move_on_after(0.05) as scope:
        await flag.wait()
    assert scope.cancelled_caught
    assert "0 waiting" in repr(flag)  # the cancelled waiter left no trace
    flag.set()
    with anyio.fail_after(1):
        await flag.wait()


async def test_taskset_aclose_cancels_and_awaits_every_task_and_its_children() -> None:
    tasks = TaskSet()
    ended: list[str] = []

    async def child() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("child")

    async def parent() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            tasks.spawn("late child", child)  # refused: the set is closing
            ended.append("parent")

    tasks.spawn("child", child)
    tasks.spawn("parent", parent)
    await asyncio.sleep(0)
    assert len(tasks) == 2
    with anyio.fail_after(5):
        await tasks.aclose()
    assert sorted(ended) == ["child", "parent"]
    assert len(tasks) == 0
    assert tasks.spawn("after close", child) is None


async def test_taskset_start_returns_the_started_value_or_raises_the_early_error() -> None:
    tasks = TaskSet()

    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        task_status.started(8080)
        await asyncio.sleep(3600)

    async def broken(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise OSError("address in use")

    try:
        with anyio.fail_after(5):
            assert await tasks.start("serve", serve) == 8080
            with pytest.raises(OSError, match="address in use"):
                await tasks.start("broken", broken)
    finally:
        await tasks.aclose()


async def test_taskset_logs_a_task_that_fails_unguarded(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet()

    async def bug() -> None:
        raise ZeroDivisionError

    task = tasks.spawn("buggy", bug)
    assert task is not None
    with anyio.fail_after(5):
        await asyncio.wait({task})
    await tasks.aclose()
    assert any("resilient_tg buggy failed" in r.getMessage() for r in caplog.records)


async def test_dispatcher_runs_only_while_callbacks_are_queued() -> None:
    registry = CallbackRegistry()
    tasks = TaskSet()
    seen: list[ConnectionState] = []
    gate = asyncio.Event()

    async def slow(change: StateChange) -> None:
        await gate.wait()
        seen.append(change.new)

    registry.add("state_change", slow)
    registry.attach(lambda fn: tasks.spawn("callbacks", fn))
    assert len(tasks) == 0  # nothing queued: no dispatcher
    for new in (ConnectionState.CONNECTING, ConnectionState.CONNECTED):
        registry.emit(
            "state_change",
            StateChange(old=ConnectionState.IDLE, new=new, reason=StateReason.START),
        )
    assert len(tasks) == 1  # one dispatcher for both, in order
    gate.set()
    with anyio.fail_after(5):
        await registry.drain()
    assert seen == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    await asyncio.sleep(0)
    assert len(tasks) == 0  # drained: the dispatcher ended
    await tasks.aclose()


def _client_side_tasks() -> list[str]:
    """Running tasks whose coroutine is ours (outside the test server) or Telethon's."""
    names = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        ours = "resilient_tg" in where and "testing" not in where
        if ours or "telethon" in where:
            names.append(code.co_qualname)
    return sorted(names)


async def test_an_idle_connected_client_owns_no_task_of_ours(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its timers are scheduler entries: at rest only Telethon's send, receive and update
    loops run (Telethon's own ping loop is stopped: ours pings), and it still pings."""
    caplog.set_level(logging.INFO)
    store = seeded_store(mtproto_server)
    async with ResilientClient(
        store, mtproto_server.api_id, mtproto_server.api_hash, keepalive=FAST_KEEPALIVE
    ) as client:
        client.on_connected(lambda change: None)
        with anyio.fail_after(20):
            await client.wait_connected()
            # The key and state were written and the callback ran: both helpers end.
            while len(client._tasks) or (  # noqa: ASYNC110 - no event announces it
                client._session is not None
                and client._session._writer is not None
                and not client._session._writer.done()
            ):
                await asyncio.sleep(0.01)
        assert _client_side_tasks() == [
            "Connection._recv_loop",
            "Connection._send_loop",
            "MTProtoSender._recv_loop",
            "MTProtoSender._send_loop",
            "UpdateMethods._update_loop",
        ]
        seen = {client._health.last_pong_at}
        with anyio.fail_after(20):
            while len(seen) < 3:  # two more pongs
                await asyncio.sleep(0.02)
                seen.add(client._health.last_pong_at)
        assert len(client._tasks) == 0


async def test_deadlines_cancel_only_the_overdue_request() -> None:
    deadlines = Deadlines()
    gate = asyncio.Event()
    outcome: dict[str, str] = {}

    async def request(name: str, seconds: float) -> None:
        task = asyncio.current_task()
        entry = deadlines.add(task, seconds)
        try:
            await gate.wait()
            outcome[name] = "answered"
        except asyncio.CancelledError:
            outcome[name] = "timed out" if entry.fired else "cancelled"
        finally:
            deadlines.finish(entry)

    slow = asyncio.ensure_future(request("slow", 0.05))
    patient = asyncio.ensure_future(request("patient", 30.0))
    started = time.monotonic()
    with anyio.fail_after(5):
        await slow
    assert 0.04 <= time.monotonic() - started < 2.0
    gate.set()
    with anyio.fail_after(5):
        await patient
    assert outcome == {"slow": "timed out", "patient": "answered"}
    assert len(deadlines) == 0
    deadlines.close()


async def test_deadlines_rearm_for_an_earlier_deadline_added_later() -> None:
    deadlines = Deadlines()
    first = deadlines.add(asyncio.current_task(), 30.0)
    fired = asyncio.Event()

    async def victim() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            fired.set()

    task = asyncio.ensure_future(victim())
    entry = deadlines.add(task, 0.02)
    with anyio.fail_after(5):
        await fired.wait()
    assert entry.fired
    assert not first.fired
    deadlines.finish(first)
    deadlines.close()


async def test_deadlines_keep_no_more_than_a_bounded_backlog_behind_a_slow_request() -> None:
    deadlines = Deadlines()
    slow = deadlines.add(asyncio.current_task(), 60.0)
    for _ in range(10_000):  # fast requests finishing behind the slow one
        deadlines.finish(deadlines.add(asyncio.current_task(), 60.0))
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 2 + 64 + 1
    deadlines.finish(slow)
    assert deadlines._heap == []
    deadlines.close()
