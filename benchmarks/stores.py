"""5. Session stores: save() latency, and the longest event-loop stall while saving.

A realistic session (auth key, update state, 200 cached entities) is saved N times in a
row to each store. A probe task sleeps 1 ms in a loop and records how much later than
asked it woke up: the longest overshoot is the longest the loop was blocked. A
``gc.callbacks`` hook times every garbage collection meanwhile, so a stall can be split
into the part a collection explains (the whole process's heap, not the store) and the
rest (the store's own blocking), which is what the goal judges. SQL stores get a unique
table prefix and their tables are dropped afterwards. A database that is not reachable
is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from resilient_tg.stores import Entity, FileStore, SessionData, SessionStore, SQLStore, UpdateState

from ._common import Config, Row, Scenario, drop_prefixed_tables, percentile

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
    """Sleeps 1 ms in a loop; each wake-up is a sample (asked at, woke at, overshoot)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # perf_counter seconds

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            woke = time.perf_counter()
            self.samples.append((t, woke, max(0.0, woke - t - 0.001)))

    @property
    def max_lag(self) -> float:
        return max((lag for _, _, lag in self.samples), default=0.0)


class _GcLog:
    """Every garbage collection while installed: (start, stop) in perf_counter seconds and
    its generation. A context manager around ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._started: tuple[float, int] | None = None
        self._stop_index: list[float] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = (now, info["generation"])
        elif self._started is not None:
            start, generation = self._started
            self.pauses.append((start, now, generation))
            self._started = None

    def __enter__(self) -> _GcLog:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def inside(self, start: float, stop: float) -> float:
        """Seconds of collection within ``[start, stop]`` (pauses are in time order)."""
        total = 0.0
        i = bisect.bisect_right(self._stops(), start)
        while i < len(self.pauses) and self.pauses[i][0] < stop:
            a, b, _ = self.pauses[i]
            total += max(0.0, min(stop, b) - max(start, a))
            i += 1
        return total

    def _stops(self) -> list[float]:
        if len(self._stop_index) != len(self.pauses):
            self._stop_index = [b for _, b, _ in self.pauses]
        return self._stop_index


def _outside_gc(probe: _LagProbe, gcs: _GcLog) -> list[tuple[float, float, float]]:
    """Per sample: (woke at, overshoot, the part of it no collection explains).

    A collection inside a sample's interval is subtracted from its overshoot rather than
    the sample dropped, so a store blocking in the same interval as a short collection
    still shows.
    """
    out = []
    for t, woke, lag in probe.samples:
        in_gc = gcs.inside(t, woke)
        out.append((woke, lag, max(0.0, lag - in_gc)))
    return out


async def _measure(store: SessionStore, n: int) -> dict[str, Any]:
    await store.save(_session(0))  # connect, create the schema: not counted
    await store.save(_session(0))
    probe = _LagProbe()
    times: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await asyncio.sleep(0.05)
        probe.samples.clear()
        begin = time.perf_counter()
        with _GcLog() as gcs:
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
        **_gc_summary(probe, gcs, begin),
        "samples_ms": [round(t * 1000, 3) for t in times],
    }


async def _idle_floor(seconds: float) -> dict[str, Any]:
    """The same probe with nothing else running: the machine's own scheduling noise, to
    read the stalls of the stores against."""
    probe = _LagProbe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await asyncio.sleep(0.05)
        probe.samples.clear()
        with _GcLog() as gcs:
            await asyncio.sleep(seconds)
            tg.cancel_scope.cancel()
    split = _outside_gc(probe, gcs)
    return {
        "seconds": seconds,
        "max_stall_ms": _ms(probe.max_lag),
        "max_stall_outside_gc_ms": _ms(max((rest for _, _, rest in split), default=0.0)),
        "gc_count": len(gcs.pauses),
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _gc_summary(probe: _LagProbe, gcs: _GcLog, begin: float) -> dict[str, Any]:
    """The stall split into collections and the rest, plus the raw collections and every
    loop-lag sample over 1 ms (times in ms since the first measured save)."""
    split = _outside_gc(probe, gcs)
    pauses = [b - a for a, b, _ in gcs.pauses]
    longest = max(range(len(pauses)), key=pauses.__getitem__, default=None)
    return {
        "max_stall_outside_gc_ms": _ms(max((rest for _, _, rest in split), default=0.0)),
        "gc_count": len(pauses),
        "gc_count_by_generation": {
            g: sum(1 for *_, gen in gcs.pauses if gen == g) for g in (0, 1, 2)
        },
        "gc_longest_ms": None if longest is None else _ms(pauses[longest]),
        "gc_longest_generation": None if longest is None else gcs.pauses[longest][2],
        "gc_total_ms": _ms(sum(pauses)),
        "gc_pauses": [[_ms(a - begin), _ms(b - a), gen] for a, b, gen in gcs.pauses],
        "stalls_over_1ms": [
            {"at_ms": _ms(woke - begin), "stall_ms": _ms(lag), "outside_gc_ms": _ms(rest)}
            for woke, lag, rest in split
            if lag > 0.001
        ],
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
        idle = await _idle_floor(cfg.n(3, 1))
        result.raw["idle loop"] = idle
        result.rows.append(
            Row(
                NAME,
                "no store (noise floor)",
                "event loop",
                "max stall",
                idle["max_stall_ms"],
                "ms",
            )
        )
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
                        await drop_prefixed_tables(store, ("leases", "sessions", "schema"))
                    except Exception as exc:  # noqa: BLE001 - best effort, reported
                        result.notes.append(f"{name}: tables not dropped ({exc!r}).")
            result.raw[name] = data
            case = f"{name} x{n}"
            result.rows.append(Row(NAME, case, "save", "p50", data["p50_ms"], "ms"))
            result.rows.append(Row(NAME, case, "save", "p99", data["p99_ms"], "ms"))
            _stall_rows(result, case, data)
    result.notes.append(
        "Stalls are split with a gc.callbacks hook: the time a garbage collection ran inside "
        "a probe interval is subtracted from that interval's overshoot; what remains is the "
        "store's own blocking, which the goal judges. A collection is triggered by whatever "
        "allocates (the store's driver included), but its length scales with every object "
        "the process holds, so it is shown apart."
    )
    result.notes.append(
        "Raw Telethon has no counterpart: its sessions (SQLiteSession) write synchronously "
        "on the event loop."
    )
    return result


def _stall_rows(result: Scenario, case: str, data: dict[str, Any]) -> None:
    """The raw stall, the part no collection explains (judged), and the collections."""
    result.rows.append(Row(NAME, case, "event loop", "max stall", data["max_stall_ms"], "ms"))
    own = data["max_stall_outside_gc_ms"]
    result.rows.append(
        Row(
            NAME,
            case,
            "event loop",
            "max stall outside GC",
            own,
            "ms",
            goal=f"<= {STALL_GOAL_MS:g} ms",
            met=own <= STALL_GOAL_MS,
        )
    )
    longest = data["gc_longest_ms"]
    gcs = (
        f"{data['gc_count']}, longest {longest:.1f} ms (gen {data['gc_longest_generation']})"
        if longest is not None
        else "0"
    )
    result.rows.append(Row(NAME, case, "event loop", "GC pauses (count, longest)", gcs))


def plot(scenario: Scenario, fig: Any) -> None:
    names = [k for k, v in scenario.raw.items() if "p50_ms" in v]
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(names))
    bars = (
        ("p50_ms", "p50"),
        ("p99_ms", "p99"),
        ("max_stall_ms", "max loop stall"),
        ("max_stall_outside_gc_ms", "max loop stall outside GC"),
    )
    width = 0.2
    for i, (key, label) in enumerate(bars):
        ax.bar(
            [x + (i - 1.5) * width for x in xs],
            [scenario.raw[k].get(key) or 0.0 for k in names],
            width,
            label=label,
        )
    ax.axhline(STALL_GOAL_MS, color="red", linestyle="--", linewidth=1, label="stall goal")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("ms")
    ax.set_title("save() latency and event-loop stall")
    ax.legend()
