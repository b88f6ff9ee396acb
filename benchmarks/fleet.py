"""2e. Fleet: N clients in one process, each with its own session, and a server restart.

Each fleet (ours with the default policy, then raw Telethon with its defaults) runs in
a child process of its own, so that the clients do not share an event loop with the
server. The server (with a data_dir, so keys survive) runs here and restarts once every
client is connected. The child records every connection attempt through a
``connection=`` subclass and, from the moment the restart is done, runs a request probe
per client until its first answered request. The server's CPU use during the comeback
is measured here, to tell whether the server is the bottleneck.

The storm is the most attempts in any 100 ms *sliding* window (each attempt starts a
window: no fixed bins that could split a burst), over the fleet size; fleet.png draws
that same sliding count over time, so the quoted peak is the curve's top.

The child is ``python -m benchmarks._fleet_child SPEC.json``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from resilient_tg.testing import MTProtoTestServer

from ._child import Child, cpu_seconds, server_spec
from ._common import OURS, TELETHON_DEFAULT, Config, Row, Scenario, ratio

NAME = "fleet"
TITLE = "Fleet: server restart"
GOAL = (
    "default policy: at most 20% of the fleet's attempts in any 100 ms (sliding); every "
    "client's first answered request within raw Telethon's slowest + 0.5 s"
)
KINDS = (OURS, TELETHON_DEFAULT)
WINDOW = 0.1
PEAK_SHARE = 0.20
MARGIN = 0.5
COMEBACK_LIMIT = 120.0  # the child stops probing after this


def peak_window(times: list[float], window: float = WINDOW) -> int:
    """The most attempts in any ``window``-second interval [t - window, t]."""
    ordered = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] < t - window - 1e-12:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def sliding_counts(times: list[float], window: float = WINDOW) -> tuple[list[float], list[int]]:
    """The step function ``s -> attempts in [s - window, s]``: its corners, for a plot;
    its maximum is `peak_window`."""
    events = sorted([(t, 1) for t in times] + [(t + window + 1e-9, -1) for t in times])
    xs: list[float] = [0.0]
    ys: list[int] = [0]
    now = 0
    for at, step in events:
        now += step
        xs.append(at)
        ys.append(now)
    return xs, ys


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = cfg.n(500, 20)
    with tempfile.TemporaryDirectory(prefix="rtg-bench-fleet-") as tmp:
        async with MTProtoTestServer(data_dir=Path(tmp) / "server") as server:
            for kind in KINDS:
                result.raw[kind] = await _fleet(server, kind, n, Path(tmp), cfg)
    raw_slowest = _slowest(result.raw[TELETHON_DEFAULT])
    ours_peak = result.raw[OURS]["peak_attempts"]
    case = f"{n} clients, one process"
    for kind in KINDS:
        data = result.raw[kind]
        is_ours = kind == OURS
        peak = data["peak_attempts"]
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "busiest 100 ms (sliding) / fleet",
                f"{peak}/{n} = {peak / n:.1%}",
                "",
                ratio(peak, ours_peak),
                f"<= {PEAK_SHARE:.0%}" if is_ours else "",
                (peak <= PEAK_SHARE * n) if is_ours else None,
            )
        )
        slowest = _slowest(data)
        answered = sum(t is not None for t in data["first_ok"])
        limit = None if raw_slowest is None else raw_slowest + MARGIN
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "restart -> every first answer",
                slowest if slowest is not None else f"{answered}/{n} answered",
                "s" if slowest is not None else "",
                ratio(slowest, _slowest(result.raw[OURS])),
                (f"<= {limit:.2f} s (Telethon + 0.5 s)" if limit else "<= Telethon + 0.5 s")
                if is_ours
                else "",
                (slowest is not None and (limit is None or slowest <= limit)) if is_ours else None,
            )
        )
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "server CPU during comeback",
                f"{data['server_cpu_share']:.0%} of a core",
            )
        )
    return result


def _slowest(data: dict[str, Any]) -> float | None:
    times = data["first_ok"]
    return None if not times or any(t is None for t in times) else max(times)


async def _fleet(
    server: MTProtoTestServer, kind: str, n: int, tmp: Path, cfg: Config
) -> dict[str, Any]:
    spec = {**server_spec(server, n, "Fleet"), "kind": kind, "seed": cfg.seed}
    spec["comeback_limit"] = COMEBACK_LIMIT
    async with Child("benchmarks._fleet_child", spec, tmp, f"fleet-{KINDS.index(kind)}") as child:
        ready = await child.read(600)
        await asyncio.sleep(0.5 if cfg.quick else 2.0)  # at rest before the restart
        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        await server.restart()
        restarted = time.monotonic() - t0
        await child.write(f"{t0}")
        done = await child.read(COMEBACK_LIMIT + 60)
        comeback = max(0.001, time.monotonic() - t0)
        cpu = cpu_seconds() - cpu0
        child.kill()  # measured: no need to wait for N clients to shut down
    attempts = done["attempts"]
    return {
        "n": n,
        "restart_seconds": round(restarted, 3),
        "connect_all_seconds": ready["connect_all_seconds"],
        "attempts": attempts,
        "peak_attempts": peak_window(attempts),
        "first_ok": done["first_ok"],
        "server_cpu_share": cpu / comeback,
        "child_cpu_seconds": done["cpu_seconds"],
    }


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 2, 1)
    n = next(iter(scenario.raw.values()))["n"]
    for j, (kind, data) in enumerate(scenario.raw.items()):
        xs, ys = sliding_counts(data["attempts"])
        peak = data["peak_attempts"]
        ax.step(xs, ys, where="post", color=f"C{j}", label=f"{kind}: peak {peak} ({peak / n:.0%})")
    ax.axhline(PEAK_SHARE * n, color="red", linestyle="--", linewidth=1, label="goal: 20% of fleet")
    ax.set_xlabel("seconds after the restart began")
    ax.set_ylabel("attempts in the last 100 ms (sliding)")
    ax.set_title(f"Reconnect storm, {n} clients")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    for j, (kind, data) in enumerate(scenario.raw.items()):
        ok = sorted(t for t in data["first_ok"] if t is not None)
        ax2.plot(ok, [(i + 1) / n for i in range(len(ok))], color=f"C{j}", label=kind)
    ax2.set_xlabel("seconds after the restart began")
    ax2.set_ylabel("fraction of fleet answered")
    ax2.set_title("First answered request")
    ax2.legend(fontsize=7)
