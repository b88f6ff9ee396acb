"""2f. Memory per connected idle client, and what a large fleet costs at rest.

Each measurement is a child process of its own holding N connected idle clients of one
kind; the server stays here. Ours: ``ResilientClient`` on a ``MemoryStore`` with
default policies. Raw Telethon: ``TelegramClient`` on a ``MemorySession`` with
``catch_up=True`` (ours always catches up after a connect). Two children per side: one
reads RSS before and after (``/proc/self/statm``, after ``gc.collect()``), one traces
Python allocations with ``tracemalloc`` (which costs RSS of its own, hence apart). Then
5,000 of ours in one process: RSS per client, and the CPU the process uses over an idle
window, as a share of one core (its keepalive pings and timers).

The child is ``python -m benchmarks._memory_child SPEC.json``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from ._child import Child, server_spec
from ._common import OURS, TELETHON_DEFAULT, Config, Row, Scenario, bench_server, ratio

NAME = "memory"
TITLE = "Memory per idle client"
GOAL = "ours <= 1.2 x raw Telethon per connected idle client (RSS and tracemalloc)"
KINDS = (OURS, TELETHON_DEFAULT)
TELETHON = "telethon (MemorySession, catch_up=True)"
MODES = ("rss", "tracemalloc")
FACTOR = 1.2


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n, big = cfg.n(500, 30), cfg.n(5000, 100)
    idle = cfg.n(30, 2)
    with tempfile.TemporaryDirectory(prefix="rtg-bench-memory-") as tmp:
        async with bench_server(result) as server:
            # Side by side: each child's memory is its own. The large one runs alone (its
            # idle CPU is the point), but for a quick run, which only checks the machinery.
            runs = [(kind, mode, n) for kind in KINDS for mode in MODES]
            children = [_child(server, kind, mode, size, idle, tmp) for kind, mode, size in runs]
            big_child = _child(server, OURS, "rss", big, idle, tmp)
            done = await asyncio.gather(*children, *([big_child] if cfg.quick else []))
            for (kind, mode, _), data in zip(runs, done, strict=False):
                result.raw[f"{kind} {mode}"] = data
            result.raw[f"{OURS} x{big}"] = done[-1] if cfg.quick else await big_child
    per = {key: _per_client(data) for key, data in result.raw.items()}
    for mode in MODES:
        ours, raw = per[f"{OURS} {mode}"], per[f"{TELETHON_DEFAULT} {mode}"]
        what = "RSS" if mode == "rss" else "tracemalloc"
        for kind in KINDS:
            is_ours = kind == OURS
            value = ours if is_ours else raw
            result.rows.append(
                Row(
                    NAME,
                    f"{n} idle clients",
                    kind if is_ours else TELETHON,
                    f"{what} per client",
                    value,
                    "KB",
                    ratio(value, ours),
                    f"<= {FACTOR} x Telethon ({ours / raw:.2f}x)" if is_ours else "",
                    ours <= FACTOR * raw if is_ours else None,
                )
            )
    for kind in KINDS:
        data = result.raw[f"{kind} rss"]
        result.rows.append(
            Row(
                NAME,
                f"{n} idle clients",
                kind if kind == OURS else TELETHON,
                f"idle CPU ({data['idle_seconds']:g} s)",
                f"{data['idle_cpu_share']:.1%} of a core",
            )
        )
    data = result.raw[f"{OURS} x{big}"]
    big_rows: tuple[tuple[str, float | str, str], ...] = (
        ("RSS per client", per[f"{OURS} x{big}"], "KB"),
        (f"idle CPU ({data['idle_seconds']:g} s)", f"{data['idle_cpu_share']:.1%} of a core", ""),
        ("connect all", data["connect_all_seconds"], "s"),
    )
    for metric, shown, unit in big_rows:
        result.rows.append(Row(NAME, f"{big} idle clients, one process", OURS, metric, shown, unit))
    result.notes.append(
        "Every client has its own account and key; the server runs in the parent process, "
        "so its memory and CPU are not counted. The four children of the first case run "
        "side by side, the large one alone (quick runs: all at once). Idle CPU is the "
        "child's user + system time over the idle window (default KeepalivePolicy: a "
        "ping every 5 s per client)."
    )
    return result


def _per_client(data: dict[str, Any]) -> float:
    traced = data["traced_bytes"]
    used = traced if traced is not None else data["rss_after"] - data["rss_before"]
    per_client: float = round(float(used) / data["n"] / 1024, 1)
    return per_client


async def _child(server: Any, kind: str, mode: str, n: int, idle: float, tmp: str) -> Any:
    spec = {
        **server_spec(server, n + 1, "Memory"),  # one more: the warm-up client
        "kind": kind,
        "mode": mode,
        "idle_seconds": idle,
        "settle_seconds": min(2.0, idle),
    }
    name = f"memory-{KINDS.index(kind)}-{mode}-{n}"
    async with Child("benchmarks._memory_child", spec, Path(tmp), name) as child:
        data = await child.read(1200)
        child.kill()
        return data


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    labels, values, colors = [], [], []
    for key, data in scenario.raw.items():
        labels.append(key.replace(TELETHON_DEFAULT, "telethon").replace(" ", "\n", 1))
        values.append(_per_client(data))
        colors.append("C0" if key.startswith(OURS) else "C1")
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.bar_label(bars, [f"{v:g} KB" for v in values], fontsize=8)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("KB per connected idle client")
    ax.set_title("Memory per idle client (RSS delta / N; tracemalloc / N)")
