"""The benchmarks' quick mode runs end to end (a smoke run: nothing about time is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import SCENARIOS
from benchmarks.__main__ import QUICK_RESULTS, RESULTS
from benchmarks._common import OURS, TELETHON_DEFAULT, TELETHON_FOREVER

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_quick_mode_writes_every_scenario_and_prints_the_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,  # a safety net: a smoke run on a busy machine takes minutes
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["mode"] == "quick"
    assert set(document["scenarios"]) == set(SCENARIOS)
    for name, scenario in document["scenarios"].items():
        assert scenario["error"] is None, (name, scenario["error"])
        assert scenario["rows"], name
        assert done.stdout.count(f"\n{name} ") >= 1, name
    assert done.stdout.startswith("scenario")
    for name, module in SCENARIOS.items():  # every scenario that draws, drew
        if hasattr(module, "plot"):
            assert (tmp_path / f"{name}.png").stat().st_size > 0, name
            assert document["scenarios"][name]["plots"] == [f"{name}.png"], name
    for key in ("cpu", "cores", "python", "telethon", "date"):
        assert document["machine"][key]
    # The delivery scenario has a supergroup case, with raw Telethon beside ours.
    rows = document["scenarios"]["delivery"]["rows"]
    for case in ("supergroup, ", "supergroup quiet after fault"):
        clients = {r["client"] for r in rows if r["case"].startswith(case)}
        assert clients == {OURS, TELETHON_DEFAULT, TELETHON_FOREVER}, case
    ours = [r for r in rows if r["case"].startswith("supergroup") and r["client"] == OURS]
    assert all(r["met"] for r in ours if r["metric"].endswith("deliveries")), ours
    assert document["scenarios"]["delivery"]["raw"]["supergroup"]["storm"]["faults"]
    # Quick runs never rewrite the published page.
    assert "results.json" in done.stdout
    assert "docs:" not in done.stdout

    # --only runs one scenario and merges it into the results already there.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "overhead",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    merged = json.loads((tmp_path / "results.json").read_text())
    assert set(merged["scenarios"]) == set(SCENARIOS)
    assert merged["merged"] == ["overhead"]
    assert merged["scenarios"]["reset"] == document["scenarios"]["reset"]
    assert merged["scenarios"]["overhead"] != document["scenarios"]["overhead"]


def test_quick_mode_never_writes_into_the_published_results() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(RESULTS), "--only", "reset"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "published full run" in done.stderr
    assert QUICK_RESULTS != RESULTS
