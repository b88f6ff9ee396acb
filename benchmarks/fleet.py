"""7. Fleet: many clients, each with its own session, against one server that restarts.

Each fleet (ours, then raw Telethon with its defaults) runs in a child process of its
own, so that its RSS delta divided by N is the memory per client, and so that the
clients do not share an event loop with the server. The server (with a data_dir, so keys
survive) runs here and restarts once every client is connected; the child records every
connection attempt through a ``connection=`` subclass and when each client is back (ours:
CONNECTED again; Telethon: its connection up again). The server's CPU use during the
comeback is measured here, to tell whether the server is the bottleneck.

The child is ``python -m benchmarks._fleet_child SPEC.json``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from resilient_tg import ReconnectPolicy
from resilient_tg.testing import MTProtoTestServer

from ._common import (
    OURS,
    TELETHON_DEFAULT,
    Config,
    Row,
    Scenario,
    new_user,
    ratio,
)

NAME = "fleet"
TITLE = "Fleet: server restart"
GOAL = (
    "all back within 2 x max_delay; no 100 ms window with more than 20% of the fleet's "
    "attempts; memory per client within 1.1 x Telethon's"
)
# The same fleet of ours with a wider first-attempt window: full jitter spreads the first
# attempts over [0, initial_delay], i.e. 20% of the fleet per 100 ms *on average* at the
# default 0.5 s, so the busiest window is above 20% by construction; 1.0 s halves that.
OURS_SPREAD = "resilient_tg (initial_delay=1.0)"
SPREAD_DELAY = 1.0
KINDS = (OURS, OURS_SPREAD, TELETHON_DEFAULT)
COMEBACK_LIMIT = 180.0
ROOT = Path(__file__).resolve().parent.parent


def peak_window(times: list[float], window: float = 0.1) -> int:
    """The most attempts in any ``window``-second interval."""
    ordered = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] < t - window + 1e-12:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = cfg.n(500, 20)
    max_delay = ReconnectPolicy().max_delay
    with tempfile.TemporaryDirectory(prefix="rtg-bench-fleet-") as tmp:
        async with MTProtoTestServer(data_dir=Path(tmp) / "server") as server:
            for kind in KINDS:
                result.raw[kind] = await _fleet(server, kind, n, Path(tmp), cfg.seed)
    ours, raw = result.raw[OURS], result.raw[TELETHON_DEFAULT]
    for kind, data in result.raw.items():
        is_ours = kind in (OURS, OURS_SPREAD)
        case = f"{n} clients"
        back = data["all_back_seconds"]
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "all back after restart",
                back if back is not None else f"never ({data['back']}/{n})",
                "s" if back is not None else "",
                ratio(back, ours["all_back_seconds"]),
                f"<= {2 * max_delay:g} s" if is_ours else "",
                (back is not None and back <= 2 * max_delay) if is_ours else None,
            )
        )
        peak = data["peak_attempts_100ms"]
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "peak attempts / 100 ms",
                f"{peak} ({peak / n:.0%})",
                "",
                ratio(peak, ours["peak_attempts_100ms"]),
                "<= 20% of fleet" if is_ours else "",
                (peak <= 0.2 * n) if is_ours else None,
            )
        )
        per_client = data["rss_per_client_kb"]
        if kind == OURS_SPREAD:
            continue  # the same client as ours: its memory and CPU say nothing new
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                "memory per client",
                per_client,
                "KB",
                ratio(per_client, ours["rss_per_client_kb"]),
                "<= 1.1 x Telethon" if is_ours else "",
                (per_client <= 1.1 * raw["rss_per_client_kb"]) if is_ours else None,
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


async def _fleet(
    server: MTProtoTestServer, kind: str, n: int, tmp: Path, seed: int
) -> dict[str, Any]:
    users = [new_user(server, f"Fleet{i}") for i in range(n)]
    spec = {
        "kind": kind,
        "host": server.host,
        "port": server.port,
        "dc_id": server.dc_id,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
        "pem": server.public_key_pem,
        "keys": [server.issue_auth_key(u.id).hex() for u in users],
        "seed": seed,
        "initial_delay": SPREAD_DELAY if kind == OURS_SPREAD else None,
    }
    path = tmp / f"fleet-{KINDS.index(kind)}.json"
    path.write_text(json.dumps(spec))
    path.chmod(0o600)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks._fleet_child",
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(child.stdout.readline(), 600))
        path.unlink()  # the keys: no longer needed on disk
        await asyncio.sleep(2.0)
        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        await server.restart()
        restarted = time.monotonic() - t0
        child.stdin.write(f"{t0}\n".encode())
        await child.stdin.drain()
        done = json.loads(await asyncio.wait_for(child.stdout.readline(), COMEBACK_LIMIT + 60))
        comeback = max(0.001, time.monotonic() - t0)
        cpu = cpu_seconds() - cpu0
        await asyncio.wait_for(child.wait(), 120)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    attempts = done["attempts"]
    back = [b for b in done["back"] if b is not None]
    return {
        "n": n,
        "restart_seconds": round(restarted, 3),
        "connect_all_seconds": ready["connect_all_seconds"],
        "rss_before": ready["rss_before"],
        "rss_after": ready["rss_after"],
        "rss_per_client_kb": round((ready["rss_after"] - ready["rss_before"]) / n / 1024, 1),
        "attempts": [round(a, 4) for a in attempts],
        "peak_attempts_100ms": peak_window(attempts),
        "back_times": [None if b is None else round(b, 3) for b in done["back"]],
        "back": len(back),
        "all_back_seconds": round(max(back), 3) if len(back) == n else None,
        "server_cpu_share": cpu / comeback,
        "child_cpu_seconds": done["cpu_seconds"],
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 2, 1)
    for kind, data in scenario.raw.items():
        attempts = data["attempts"]
        if attempts:
            top = max(attempts)
            bins = [i * 0.1 for i in range(int(top / 0.1) + 2)]
            ax.hist(attempts, bins=bins, alpha=0.6, label=kind)
    n = next(iter(scenario.raw.values()))["n"]
    ax.axhline(0.2 * n, color="red", linestyle="--", linewidth=1, label="20% of fleet")
    ax.set_xlabel("seconds after restart (100 ms bins)")
    ax.set_ylabel("connection attempts")
    ax.set_title(f"Reconnect storm, {n} clients")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for kind, data in scenario.raw.items():
        back = sorted(b for b in data["back_times"] if b is not None)
        ax2.plot(back, [(i + 1) / n for i in range(len(back))], label=kind)
    ax2.set_xlabel("seconds after restart")
    ax2.set_ylabel("fraction of fleet back")
    ax2.set_title("Comeback")
    ax2.legend(fontsize=8)
