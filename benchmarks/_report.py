"""The table, the plots and docs/benchmarks.md, all from the scenarios' results."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import telethon

import resilient_tg

from ._common import Row, Scenario

__all__ = ["machine", "render_docs", "render_table", "write_plots"]


def machine() -> dict[str, Any]:
    """Where the numbers came from (no host names, no environment)."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "telethon": telethon.__version__,
        "resilient_tg": resilient_tg.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if unit == "ms" or abs(value) < 10:
            text = f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
        else:
            text = f"{value:.1f}"
        return f"{text} {unit}".strip()
    if isinstance(value, int):
        return f"{value} {unit}".strip()
    return str(value)


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def _cells(row: Row) -> list[str]:
    return [
        row.scenario,
        row.case,
        row.client,
        row.metric,
        _fmt(row.value, row.unit),
        "" if row.ratio is None else f"{row.ratio:.2f}x",
        row.goal,
        _verdict(row),
    ]


HEADER = ["scenario", "case", "client", "metric", "value", "vs ours", "goal", "verdict"]


def render_table(results: list[Scenario]) -> str:
    rows = [HEADER]
    for scenario in results:
        if scenario.error:
            rows.append([scenario.name, "", "", "ERROR", scenario.error[:60], "", "", "MISSED"])
        rows += [_cells(r) for r in scenario.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(rows: list[Row]) -> str:
    head = HEADER[1:]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = _cells(row)[1:]
        cells[-1] = f"**{cells[-1]}**" if cells[-1] == "MISSED" else cells[-1]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def write_plots(results: list[Scenario], out: Path) -> list[list[str]]:
    """One PNG per scenario that has a ``plot``; returns the file names per scenario."""
    from . import SCENARIOS

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return [[] for _ in results]
    names: list[list[str]] = []
    for scenario in results:
        plot = getattr(SCENARIOS[scenario.name], "plot", None)
        if plot is None or scenario.error:
            names.append([])
            continue
        fig = plt.figure(figsize=(8, 4.2), dpi=100)
        try:
            plot(scenario, fig)
            fig.tight_layout()
            name = f"{scenario.name}.png"
            fig.savefig(out / name)
            names.append([name])
        except Exception:  # noqa: BLE001 - a broken plot must not lose the numbers
            traceback.print_exc()
            names.append([])
        finally:
            plt.close(fig)
    return names


def _embedded(title: str, path: Path, rel: str, docs_dir: Path) -> str:
    """Copy the plot next to the page (mkdocs only serves files under docs/) and link it;
    the original stays with the results it was drawn from."""
    if not path.exists():
        return f"*(plot missing: `{rel}`)*"
    target = docs_dir / "img" / "benchmarks" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return f"![{title}](img/benchmarks/{path.name})\n\n*Plot: `{rel.lstrip('./')}`*"


def render_docs(document: dict[str, Any], results: list[Scenario], out: Path, docs: Path) -> str:
    m = document["machine"]
    rel = os.path.relpath(out, docs.parent)
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks` from benchmarks/results/results.json; the",
        "     prose under each scenario is kept in benchmarks/_findings.py. -->",
        "",
        "ResilientClient against raw Telethon — with its defaults and with",
        "`connection_retries=None` — in the same run, on the same `MTProtoTestServer` and",
        "`FaultProxy`, offline, on one machine. Ratios are *Telethon / ours*: above 1 means",
        "Telethon took longer (or used more).",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[dev]'   # or '.[bench,sql,postgres,mysql,testing]'",
        ".venv/bin/python -m benchmarks            # full run: ~25-30 min, rewrites this page",
        ".venv/bin/python -m benchmarks --quick    # smoke run, ~2 min (CI): results-quick/",
        ".venv/bin/python -m benchmarks --only reset recovery   # merged into results.json",
        "```",
        "",
        f"**Run of {m['date']}** ({document['mode']} mode, seed {document['seed']}, "
        f"{document['elapsed_seconds']:.0f} s): {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB RAM, {m['os']}; Python {m['python']}, Telethon "
        f"{m['telethon']}, resilient_tg {m['resilient_tg']}. The server, the proxy and the "
        "clients share the machine (and, but for the overhead and fleet scenarios, whose "
        "clients run in a child process, one process and one event loop), so absolute "
        "times include their contention; the ratios are the point.",
        "",
    ]
    reruns = [
        f"{name} ({r['machine']['cpu']}, {r['machine']['cores']} cores, {r['started_at']})"
        for name, d in document["scenarios"].items()
        if (r := d.get("run")) and r.get("machine") and r["machine"]["cpu"] != m["cpu"]
    ]
    if reruns:
        parts += [
            "Re-run with `--only` on another host of this size (compare their ratios, not "
            "their times, with the rest): " + "; ".join(reruns) + ".",
            "",
        ]
    from ._findings import FINDINGS, SUMMARY

    parts += [SUMMARY.strip(), ""]
    for scenario in results:
        parts += [f"## {scenario.title}", "", f"Goal: {scenario.goal}.", ""]
        if scenario.error:
            parts += [f"**The scenario failed:** `{scenario.error}`", ""]
        if scenario.rows:
            parts += [_markdown_table(scenario.rows), ""]
        for plot in scenario.plots:
            parts += [_embedded(scenario.title, out / plot, f"{rel}/{plot}", docs.parent), ""]
        for note in scenario.notes:
            parts += [f"- {note}"]
        if scenario.notes:
            parts.append("")
        finding = FINDINGS.get(scenario.name)
        if finding:
            parts += [finding.strip(), ""]
    parts += [
        "## How",
        "",
        "- Everything is timed with `time.monotonic()` in the process that runs the clients.",
        "  Ours: the `StateChange` of each transition. Raw Telethon: a `connection=`",
        "  subclass of `ConnectionTcpFull` records each `connect()` and `disconnect()` (its",
        "  sender disconnects the connection when it begins a reconnect); Telethon is not",
        "  patched.",
        "- Clients log in with keys the server issues (`issue_auth_key`), skipping the DH",
        "  exchange, so setup does not dominate.",
        "- Random choices (fault order, timing, jitter) are seeded (`--seed`).",
        "- Raw samples, per client, are in `benchmarks/results/results.json`.",
        "",
    ]
    return "\n".join(parts)
