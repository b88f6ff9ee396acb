"""What the demo shows: progress on a console, the client's log lines, and the
final report (a table for humans, a dict for ``--json``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import attrs

__all__ = ["Console", "DemoReport", "FaultResult", "demo_logging", "render_report"]


@attrs.frozen
class FaultResult:
    """One fault: seconds from injecting it to detecting the loss and to CONNECTED again."""

    name: str
    label: str
    detected: float | None
    recovered: float | None
    sent: int
    received: int
    duplicated: int
    lost: int
    reason: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.duplicated == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "detection_seconds": _round(self.detected),
            "recovery_seconds": _round(self.recovered),
            "sent": self.sent,
            "received": self.received,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "reason": self.reason,
            "error": self.error,
            "ok": self.ok,
        }


@attrs.frozen
class DemoReport:
    """Everything the demo measured; ``ok`` only if every message arrived exactly once."""

    faults: tuple[FaultResult, ...]
    sent: int
    received: int
    duplicated: int
    lost: int
    elapsed: float
    fast: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.lost == 0
            and self.duplicated == 0
            and all(f.ok for f in self.faults)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "fast": self.fast,
            "elapsed_seconds": _round(self.elapsed),
            "faults": [f.to_dict() for f in self.faults],
            "totals": {
                "sent": self.sent,
                "received": self.received,
                "duplicated": self.duplicated,
                "lost": self.lost,
            },
            "error": self.error,
        }


class Console:
    """Progress output: a live status line on a TTY (carriage-return updates), plain
    lines otherwise, nothing at all when quiet (``--json``)."""

    def __init__(self, stream: TextIO, *, quiet: bool = False, live: bool | None = None) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = (not quiet) and (stream.isatty() if live is None else live)
        self._status = ""

    def status(self, text: str) -> None:
        """Replace the live status line (TTY only)."""
        if not self.live:
            return
        self._status = text
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def line(self, text: str) -> None:
        """A permanent line (above the status line on a TTY)."""
        if self.quiet:
            return
        if self.live:
            self.stream.write("\r\x1b[K" + text + "\n" + self._status)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Clear the status line before the final report."""
        if self.live and self._status:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._status = ""


def render_report(report: DemoReport) -> str:
    """The final table and verdict, for humans."""
    lines = [
        f"{'fault':<17} {'detected':>9} {'recovered':>10} {'sent':>6} {'received':>9} "
        f"{'duplicated':>11}"
    ]
    for f in report.faults:
        detected = f"{f.detected:.2f}s" if f.detected is not None else "-"
        recovered = f"{f.recovered:.2f}s" if f.recovered is not None else "FAILED"
        lines.append(
            f"{f.label:<17} {detected:>9} {recovered:>10} {f.sent:>6} {f.received:>9} "
            f"{f.duplicated:>11}"
        )
        if f.error:
            lines.append(f"  ! {f.error}")
    lines.append("")
    lines.append(
        f"messages sent {report.sent}, received {report.received}, "
        f"lost {report.lost}, duplicated {report.duplicated}"
    )
    if report.error:
        lines.append(f"! {report.error}")
    lines.append(
        "every message arrived exactly once"
        if report.ok
        else "FAILED: messages were lost or duplicated, or a fault was not survived"
    )
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.console.quiet:  # --json: stdout is the document; errors go to stderr
                sys.stderr.write(f"resilient-tg demo: {record.getMessage()}\n")
            else:
                self.console.line(f"  · {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the demo
            self.handleError(record)


@contextlib.contextmanager
def demo_logging(console: Console) -> Iterator[None]:
    """Our transitions as plain lines (none when quiet); Telethon's chatter muted."""
    package = logging.getLogger("resilient_tg")
    client = logging.getLogger("resilient_tg.client")
    telethon = logging.getLogger("telethon")
    saved = (package.level, package.propagate, client.level, telethon.level)
    handler = _ConsoleHandler(console)
    package.addHandler(handler)
    package.propagate = False
    package.setLevel(logging.ERROR if console.quiet else logging.WARNING)
    client.setLevel(logging.ERROR if console.quiet else logging.INFO)
    telethon.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        client.setLevel(saved[2])
        telethon.setLevel(saved[3])
