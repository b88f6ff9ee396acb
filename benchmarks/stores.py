"""5. Session stores: save() latency, and the longest event-loop stall while saving.

A realistic session (auth key, update state, 200 cached entities) is saved N times in a
row to each store. A probe task sleeps 1 ms in a loop and records how much later than
asked it woke up: the longest overshoot is the longest the loop was blocked. SQL
stores get a unique table prefix and their tables are dropped afterwards. A database
that is not reachable is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from resilient_tg.stores import Entity, FileStore, SessionData, SessionStore, SQLStore, UpdateState

from ._common import Config, Row, Scenario, percentile

NAME = "stores"
TITLE = "Session store saves"
GOAL = "no event-loop stall over 5 ms during saves"

PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("RESILIENT_TG_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
STALL_GOAL_MS = 5.0


def _session(i: int) -> SessionData:
    return SessionData(
        dc_id=2,
        server_address="127.0.0.1",
        port=443,
        auth_key=os.urandom(256),
        update_state=UpdateState(pts=1000 + i, qts=0, date=1_700_000_000 + i, seq=i),
        entities=tuple(
            Entity(id=10_000 + e, access_hash=e * 7919, username=f"user{e}", name=f"User {e}")
            for e in range(200)
        ),
    )


class _LagProbe:
    def __init__(self) -> None:
        self.max_lag = 0.0

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max_lag = max(self.max_lag, time.perf_counter() - t - 0.001)


async def _drop(store: SQLStore) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(store._url)
    try:
        async with engine.begin() as conn:
            for table in ("leases", "sessions", "schema"):
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {store.table_prefix}{table}"))
    finally:
        await engine.dispose()


async def _measure(store: SessionStore, n: int) -> dict[str, Any]:
    await store.save(_session(0))  # connect, create the schema: not counted
    await store.save(_session(0))
    probe = _LagProbe()
    times: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await asyncio.sleep(0.05)
        probe.max_lag = 0.0
        for i in range(n):
            data = _session(i)
            t = time.perf_counter()
            await store.save(data)
            times.append(time.perf_counter() - t)
        tg.cancel_scope.cancel()
    return {
        "p50_ms": percentile(times, 50) * 1000,  # type: ignore[operator]
        "p99_ms": percentile(times, 99) * 1000,  # type: ignore[operator]
        "max_stall_ms": probe.max_lag * 1000,
        "samples_ms": [round(t * 1000, 3) for t in times],
    }


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = cfg.n(1000, 50)
    prefix = f"rtgbench_{os.getpid()}_{int(time.time())}_"
    with tempfile.TemporaryDirectory(prefix="rtg-bench-stores-") as tmp:
        makers: dict[str, Callable[[], SessionStore]] = {
            "FileStore": lambda: FileStore(Path(tmp) / "file" / "session.json"),
            "SQLite": lambda: SQLStore(f"sqlite:///{tmp}/s.db", table_prefix=prefix),
            "PostgreSQL": lambda: SQLStore(PG_URL, table_prefix=prefix),
            "MariaDB": lambda: SQLStore(MARIADB_URL, table_prefix=prefix),
        }
        for name, make in makers.items():
            store = make()
            try:
                data = await asyncio.wait_for(_measure(store, n), 300)
            except Exception as exc:  # noqa: BLE001 - an unreachable database is reported
                result.raw[name] = {"error": f"{type(exc).__name__}: {exc}"}
                result.rows.append(Row(NAME, name, "-", "save", f"error: {type(exc).__name__}"))
                result.notes.append(f"{name}: not measured ({type(exc).__name__}: {exc}).")
                continue
            finally:
                await store.aclose()
                if isinstance(store, SQLStore):
                    try:
                        await _drop(store)
                    except Exception as exc:  # noqa: BLE001 - best effort, reported
                        result.notes.append(f"{name}: tables not dropped ({exc!r}).")
            result.raw[name] = data
            case = f"{name} x{n}"
            result.rows.append(Row(NAME, case, "save", "p50", data["p50_ms"], "ms"))
            result.rows.append(Row(NAME, case, "save", "p99", data["p99_ms"], "ms"))
            stall = data["max_stall_ms"]
            result.rows.append(
                Row(
                    NAME,
                    case,
                    "event loop",
                    "max stall",
                    stall,
                    "ms",
                    goal=f"<= {STALL_GOAL_MS:g} ms",
                    met=stall <= STALL_GOAL_MS,
                )
            )
    result.notes.append(
        "Raw Telethon has no counterpart: its sessions (SQLiteSession) write synchronously "
        "on the event loop."
    )
    return result


def plot(scenario: Scenario, fig: Any) -> None:
    names = [k for k, v in scenario.raw.items() if "p50_ms" in v]
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(names))
    ax.bar([x - 0.27 for x in xs], [scenario.raw[k]["p50_ms"] for k in names], 0.27, label="p50")
    ax.bar(xs, [scenario.raw[k]["p99_ms"] for k in names], 0.27, label="p99")
    ax.bar(
        [x + 0.27 for x in xs],
        [scenario.raw[k]["max_stall_ms"] for k in names],
        0.27,
        label="max loop stall",
    )
    ax.axhline(STALL_GOAL_MS, color="red", linestyle="--", linewidth=1, label="stall goal")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("ms")
    ax.set_title("save() latency and event-loop stall")
    ax.legend()
