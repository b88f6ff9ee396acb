"""`resilient-tg demo`: the offline fault tour, as a user runs it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from resilient_tg._demo import Console, DemoReport, FaultResult, render_report

FAULTS = ["reset", "refused", "blackhole", "server_restart", "process_restart"]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_tg.cli", "demo", "--fast", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fast_json_demo_survives_every_fault_and_delivers_each_message_once() -> None:
    result = run_demo("--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)  # stdout is the document and nothing else
    assert document["ok"] is True
    assert [f["name"] for f in document["faults"]] == FAULTS
    for fault in document["faults"]:
        assert fault["ok"] is True, fault
        assert fault["lost"] == 0
        assert fault["duplicated"] == 0
        assert fault["sent"] == fault["received"] > 0
        assert fault["recovery_seconds"] is not None
        if fault["name"] != "process_restart":
            assert fault["detection_seconds"] is not None
    blackhole = document["faults"][2]
    assert blackhole["reason"] == "keepalive_timeout"
    assert blackhole["detection_seconds"] <= 0.5 + 0.5 + 1.0  # interval + timeout + margin
    totals = document["totals"]
    assert totals["lost"] == 0
    assert totals["duplicated"] == 0
    assert totals["sent"] == totals["received"] > 0
    assert document["elapsed_seconds"] < 20


def test_human_demo_prints_progress_and_the_table() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "\r" not in out  # not a TTY: plain lines, no status-line redraws
    assert "link lost" in out  # our transitions, one line each
    assert "telethon" not in (out + result.stderr).lower()  # its chatter is muted
    assert "fault" in out
    assert "detected" in out
    assert "recovered" in out
    for label in ("reset", "refused 1s", "black hole", "server restart", "process restart"):
        assert label in out
    assert "lost 0, duplicated 0" in out
    assert out.rstrip().endswith("every message arrived exactly once")


def test_live_status_line_rewrites_itself_on_a_tty() -> None:
    stream = io.StringIO()
    console = Console(stream, live=True)
    console.status("state connected")
    console.line("reset: found")
    console.status("state reconnecting")
    console.finish()
    assert stream.getvalue() == (
        "\rstate connected\x1b[K"
        "\r\x1b[Kreset: found\nstate connected"
        "\rstate reconnecting\x1b[K"
        "\r\x1b[K"
    )


def test_quiet_console_prints_nothing() -> None:
    stream = io.StringIO()
    console = Console(stream, quiet=True, live=True)
    console.status("x")
    console.line("y")
    assert stream.getvalue() == ""


def test_report_fails_on_a_duplicate_or_a_failed_fault() -> None:
    fine = FaultResult("reset", "reset", 0.01, 0.1, sent=2, received=2, duplicated=0, lost=0)
    duplicated = FaultResult("reset", "reset", 0.01, 0.1, sent=2, received=3, duplicated=1, lost=0)
    failed = FaultResult("blackhole", "black hole", None, None, 2, 0, 0, 2, error="timed out")

    def report(*faults: FaultResult) -> DemoReport:
        sent = sum(f.sent for f in faults)
        received = sum(f.received for f in faults)
        dup = sum(f.duplicated for f in faults)
        lost = sum(f.lost for f in faults)
        return DemoReport(faults, sent, received, dup, lost, elapsed=1.0, fast=True)

    assert report(fine).ok
    assert "every message arrived exactly once" in render_report(report(fine))
    assert not report(fine, duplicated).ok
    assert not report(fine, failed).ok
    text = render_report(report(fine, failed))
    assert "FAILED" in text
    assert "timed out" in text
    assert report(fine, failed).to_dict()["ok"] is False
