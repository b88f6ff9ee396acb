"""``python -m benchmarks [--quick] [--out DIR] [--only NAME ...] [--docs auto|yes|no]``.

Runs the scenarios, prints the table, writes ``results.json`` and the PNG plots to
``--out`` (default ``benchmarks/results/``, the published full run; ``--quick`` runs go
to ``benchmarks/results-quick/``, which git ignores) and, for a full run of every
scenario into the default directory, regenerates ``docs/benchmarks.md``. With ``--only``
the scenarios run are merged into the directory's ``results.json``: the others are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import SCENARIOS
from ._common import Config, Row, Scenario, quiet_logs
from ._report import machine, render_docs, render_table, write_plots

RESULTS = Path(__file__).parent / "results"
QUICK_RESULTS = Path(__file__).parent / "results-quick"
DOCS = Path(__file__).parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, a CI smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where JSON and PNGs go (default: benchmarks/results/, or "
        "benchmarks/results-quick/ with --quick)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(SCENARIOS), metavar="NAME", help="run only these"
    )
    parser.add_argument("--seed", type=int, default=Config(quick=False).seed)
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="run nothing: redraw the plots, table and docs from --out/results.json",
    )
    parser.add_argument(
        "--docs",
        choices=("auto", "yes", "no"),
        default="auto",
        help="regenerate docs/benchmarks.md (auto: only for a full run of every scenario "
        "into the default directory)",
    )
    args = parser.parse_args(argv)
    cfg = Config(quick=args.quick, seed=args.seed)
    names = args.only or list(SCENARIOS)
    out: Path = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if args.quick and out.resolve() == RESULTS.resolve():
        parser.error("--quick never writes over the published full run (benchmarks/results/)")
    out.mkdir(parents=True, exist_ok=True)

    if args.redraw:
        document = json.loads((out / "results.json").read_text())
        results = [_scenario(d) for d in document["scenarios"].values()]
        cfg = Config(quick=document["mode"] == "quick", seed=document["seed"])
        return _finish(document, results, out, args, cfg)
    started = time.time()
    results = asyncio.run(_run_all(cfg, names))
    document = {
        "mode": "quick" if cfg.quick else "full",
        "seed": cfg.seed,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "scenarios": {s.name: s.to_dict() for s in results},
    }
    if args.only:
        document, results = _merge(document, results, out / "results.json")
    return _finish(document, results, out, args, cfg)


def _merge(
    document: dict[str, Any], results: list[Scenario], path: Path
) -> tuple[dict[str, Any], list[Scenario]]:
    """The scenarios just run, put into the results already in ``path`` (same mode only:
    a quick scenario never lands in a full run's file, nor the reverse)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return document, results
    if old.get("mode") != document["mode"] or not isinstance(old.get("scenarios"), dict):
        return document, results
    fresh = {s.name: s for s in results}
    scenarios = {name: d for name, d in old["scenarios"].items() if name in SCENARIOS}
    scenarios.update(document["scenarios"])
    order = [name for name in SCENARIOS if name in scenarios]
    # The header (machine, seed, start) stays the full run's; each re-run scenario keeps
    # the machine and time of its own run, which the docs name.
    run = {"started_at": document.get("started_at"), "machine": document.get("machine")}
    for name in fresh:
        scenarios[name]["run"] = run
    merged = dict(old)
    merged["scenarios"] = {name: scenarios[name] for name in order}
    merged["elapsed_seconds"] = round(sum(d["elapsed_seconds"] for d in scenarios.values()), 1)
    merged["merged"] = sorted(set(old.get("merged", [])) | set(fresh))  # re-run with --only
    return merged, [fresh.get(name) or _scenario(scenarios[name]) for name in order]


def _scenario(d: dict[str, Any]) -> Scenario:
    rows = [Row(**r) for r in d["rows"]]
    return Scenario(
        d["name"],
        d["title"],
        d["goal"],
        rows,
        d["raw"],
        d["notes"],
        d["plots"],
        d["elapsed_seconds"],
        d["error"],
    )


def _finish(
    document: dict[str, Any],
    results: list[Scenario],
    out: Path,
    args: argparse.Namespace,
    cfg: Config,
) -> int:
    for scenario, plots in zip(results, write_plots(results, out), strict=True):
        scenario.plots = plots
        document["scenarios"][scenario.name]["plots"] = plots
    (out / "results.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(render_table(results))
    print(f"\nresults: {out / 'results.json'} ({document['elapsed_seconds']} s)")
    write_docs = args.docs == "yes" or (
        args.docs == "auto" and not cfg.quick and not args.only and out.resolve() == RESULTS
    )
    if write_docs:
        DOCS.write_text(render_docs(document, results, out, DOCS))
        print(f"docs: {DOCS}")
    return 1 if any(s.error for s in results) else 0


async def _run_all(cfg: Config, names: list[str]) -> list[Scenario]:
    results: list[Scenario] = []
    with quiet_logs():
        for name in names:
            module = SCENARIOS[name]
            print(f"== {name}: {module.TITLE}", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                scenario: Scenario = await module.run(cfg)
            except Exception as exc:  # noqa: BLE001 - one failed scenario must not hide the rest
                traceback.print_exc()
                scenario = Scenario(name, module.TITLE, module.GOAL, error=repr(exc))
            scenario.elapsed = time.monotonic() - started
            print(f"   {scenario.elapsed:.1f} s", file=sys.stderr, flush=True)
            results.append(scenario)
    return results


if __name__ == "__main__":
    sys.exit(main())
