"""Every example runs as a user would run it, against the local test server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_test_server_demo_delivers_every_message_once() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "test_server_demo.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every message arrived exactly once" in result.stdout
    for fault in ("reset", "refuse 2s", "server restart (kept)"):
        assert fault in result.stdout


def test_resilient_demo_survives_every_fault_and_loses_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "resilient_demo.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost 0, duplicated 0" in result.stdout
    for fault in ("reset", "refused 3s", "black hole", "server restart", "process restart"):
        assert fault in result.stdout


def test_fleet_worker_demo_moves_a_killed_workers_accounts() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "fleet_worker.py"), "--demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all six accounts connected on the survivor" in result.stdout
    assert "demo done: the killed worker's accounts moved" in result.stdout
