"""6. Soak: many fault cycles in one process; what is left behind.

One client at a time behind the proxy: first ours, then raw Telethon
(``connection_retries=None``, so it survives every cycle). Each cycle is a reset, a short
refusal plus a reset, or a black hole, and ends when the client is back. RSS
(/proc/self/statm), open fds (/proc/self/fd) and asyncio tasks are read after a warm-up
and after the last cycle (after ``gc.collect()``); the server and proxy live in the same
process, so their share is in both readings.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from telethon.tl import functions

from resilient_tg import ConnectionState, KeepalivePolicy, ReconnectPolicy
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from ._common import (
    OURS,
    TELETHON_FOREVER,
    Config,
    LinkLog,
    OursWatch,
    Row,
    Scenario,
    bench_server,
    bounded,
    fd_count,
    new_user,
    open_ours,
    open_telethon,
    rss_bytes,
    settle_memory,
    task_count,
    wait_for_state,
)

NAME = "soak"
TITLE = "Soak: fault cycles in one process"
GOAL = "RSS growth under 5 MB; fds and tasks back to baseline"

KEEPALIVE = KeepalivePolicy(interval=0.5, timeout=0.5)
RECONNECT = ReconnectPolicy(initial_delay=0.02, max_delay=0.2, connect_timeout=3.0)
WARMUP = 10
RSS_GOAL = 5 * 1024 * 1024


def _snapshot() -> dict[str, int]:
    settle_memory()
    return {"rss": rss_bytes(), "fds": fd_count(), "tasks": task_count()}


async def _fault(i: int, proxy: FaultProxy, rng: random.Random) -> None:
    kind = i % 3
    if kind == 0:
        proxy.reset()
    elif kind == 1:
        proxy.refuse(0.1)
        proxy.reset()
    else:
        # A short black hole; heal() then aborts the link that lost bytes. (Not cut_after:
        # it also cuts the reconnecting link at once, which trips the test server's crash
        # on links reset before it reads their address; see docs/benchmarks.md.)
        proxy.blackhole()


async def _ours(
    server: MTProtoTestServer, proxy: FaultProxy, cycles: int, rng: random.Random
) -> dict[str, Any]:
    async with open_ours(
        server, new_user(server), port=proxy.port, keepalive=KEEPALIVE, reconnect=RECONNECT
    ) as (client, watch):

        async def cycle(i: int) -> bool:
            start = time.monotonic()
            await _fault(i, proxy, rng)
            left = await _left(watch, start, 5.0)
            await asyncio.sleep(0.05)
            proxy.heal()
            return left and await wait_for_state(client, ConnectionState.CONNECTED, 30.0)

        return await _soak(cycle, cycles, lambda: watch.changes.clear())


async def _telethon(
    server: MTProtoTestServer, proxy: FaultProxy, cycles: int, rng: random.Random
) -> dict[str, Any]:
    async with open_telethon(
        server, new_user(server), port=proxy.port, connection_retries=None
    ) as (client, links):

        async def cycle(i: int) -> bool:
            start = time.monotonic()
            await _fault(i, proxy, rng)
            if i % 3 == 2:  # Telethon takes 60-120 s to notice a black hole: heal instead
                await asyncio.sleep(0.3)
                down = True
            else:
                down = await links.wait(lambda: bool(links.first_after(links.downs, start)), 5.0)
                await asyncio.sleep(0.05)
            proxy.heal()
            ok, _ = await bounded(client(functions.updates.GetStateRequest()), 30.0)
            return down and ok

        def trim(log: LinkLog = links) -> None:
            for times in (log.attempts, log.ups, log.downs):
                times.clear()

        return await _soak(cycle, cycles, trim)


async def _left(watch: OursWatch, start: float, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not watch.first(start, lambda c: c.old is ConnectionState.CONNECTED):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def _soak(cycle: Any, cycles: int, trim: Any) -> dict[str, Any]:
    failed = 0
    for i in range(min(WARMUP, cycles)):  # quick runs warm up as long as they measure
        failed += not await cycle(i)
    trim()  # our own bookkeeping must not count as the client's growth
    before = _snapshot()
    trend: list[tuple[int, int]] = [(0, before["rss"])]
    started = time.monotonic()
    in_a_row = 0
    for i in range(cycles):
        ok = await cycle(i)
        failed += not ok
        in_a_row = 0 if ok else in_a_row + 1
        if in_a_row >= 3:  # the server or proxy is gone: stop rather than time out 1000 times
            cycles = i + 1
            break
        if (i + 1) % max(1, cycles // 20) == 0:
            trim()
            settle_memory()
            trend.append((i + 1, rss_bytes()))
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)  # lingering pings and closes finish
    trim()
    after = _snapshot()
    return {
        "cycles": cycles,
        "failed_cycles": failed,
        "seconds": round(elapsed, 1),
        "before": before,
        "after": after,
        "rss_trend": trend,
    }


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    ours_cycles = cfg.n(1000, 10)
    raw_cycles = cfg.n(150, 6)  # ~1 s a cycle: Telethon waits retry_delay
    async with (
        bench_server(result) as server,
        FaultProxy(server.host, server.port) as proxy,
    ):
        result.raw[OURS] = await _ours(server, proxy, ours_cycles, rng)
        result.raw[TELETHON_FOREVER] = await _telethon(server, proxy, raw_cycles, rng)
    for kind in (OURS, TELETHON_FOREVER):
        data = result.raw[kind]
        before, after = data["before"], data["after"]
        growth = after["rss"] - before["rss"]
        ours = kind == OURS
        case = f"{data['cycles']} cycles"
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "RSS growth",
                growth / 1024 / 1024,
                "MB",
                goal="< 5 MB" if ours else "",
                met=growth < RSS_GOAL if ours else None,
            )
        )
        for key in ("fds", "tasks"):
            result.rows.append(
                Row(
                    NAME,
                    case,
                    kind,
                    f"{key} before -> after",
                    f"{before[key]} -> {after[key]}",
                    goal="back to baseline" if ours else "",
                    met=after[key] <= before[key] if ours else None,
                )
            )
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "failed cycles",
                data["failed_cycles"],
                goal="0" if ours else "",
                met=data["failed_cycles"] == 0 if ours else None,
            )
        )
    if not cfg.quick:
        result.notes.append(
            f"Raw Telethon runs {raw_cycles} cycles, not {ours_cycles}: a third of the cycles "
            "are refusals, after which it waits its fixed retry_delay (1 s)."
        )
    return result


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    for kind in (OURS, TELETHON_FOREVER):
        data = scenario.raw[kind]
        base = data["rss_trend"][0][1]
        xs = [c for c, _ in data["rss_trend"]]
        ys = [(r - base) / 1024 / 1024 for _, r in data["rss_trend"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=kind)
    ax.axhline(5, color="red", linestyle="--", linewidth=1, label="goal (ours)")
    ax.set_xlabel("fault cycles after warm-up")
    ax.set_ylabel("RSS growth (MB)")
    ax.set_title("Soak: memory across fault cycles (one process)")
    ax.legend()
