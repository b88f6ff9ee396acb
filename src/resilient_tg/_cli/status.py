"""``resilient-tg status``: read the health a running ResilientClient publishes.

A container healthcheck: it reads the status file (``status_file=``) or asks the
status endpoint (``status_address=``) and never opens the session, which a live
process holds (opening it again would hit the lease or get the key revoked).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ._common import EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, CliError

__all__ = ["register"]

DESCRIPTION = """\
Report the health a running ResilientClient publishes, without touching its session.

  --file PATH  the JSON file kept current by ResilientClient(status_file=PATH);
               it must have been written within --max-age seconds
  --url URL    the endpoint of ResilientClient(status_address="host:port"), e.g.
               http://127.0.0.1:8081 (GET /health: 200 healthy, 503 not)

Exits 0 only if the client is healthy (connected, authorized, answering pings) and
the report is fresh; 1 otherwise, with a one-line reason on stderr. That is a
readiness probe. With --live it is a liveness probe instead: exit 0 while the client
is alive and still trying (a fresh report, any non-final state, reconnecting
included); 1 once the report is stale or the client stopped for good (auth_lost,
rejected, gave_up, closed) — restarting the process is what helps then. Bad arguments exit 2.
It only reads: a missing status file is a failed probe (1), never created."""

_FINAL_STATES = ("auth_lost", "rejected", "gave_up", "closed")


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="health of a running client, from its status file or endpoint (exit 0 if healthy)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="PATH", help="status file written by the client")
    source.add_argument("--url", metavar="URL", help="status endpoint served by the client")
    parser.add_argument(
        "--max-age",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="a status file older than this is stale (default: 10; the client writes every 1 s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="HTTP timeout for --url (default: 5)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="liveness instead of readiness: 0 unless stale or stopped for good",
    )
    parser.add_argument("--json", action="store_true", help="print the published JSON on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 if healthy and fresh; raises CliError(reason, 1) otherwise."""
    if args.file is not None:
        document, problem = _from_file(Path(args.file), args.max_age)
    else:
        document, problem = _from_url(args.url, args.timeout)
    if args.live:
        problem = _liveness_problem(document, problem)
    elif document is not None and problem is None and document.get("healthy") is not True:
        problem = _unhealthy_reason(document)
    if args.json and document is not None:
        print(json.dumps(document, indent=2, sort_keys=True))
    if problem is not None:
        raise CliError(problem, EXIT_UNHEALTHY)
    if not args.json:
        assert document is not None
        print(_summary(document) if not args.live else f"alive: {document.get('state')}")
    return EXIT_OK


def _liveness_problem(document: dict[str, Any] | None, problem: str | None) -> str | None:
    """Only a missing/stale report or a final state fails a liveness probe."""
    if document is None:
        return problem or "no status document"
    if problem is not None and (problem.startswith("stale") or "no written_at" in problem):
        return problem
    state = document.get("state")
    if state in _FINAL_STATES:
        return f"stopped for good: state {state} ({document.get('detail') or 'no detail'})"
    return None


def _from_file(path: Path, max_age: float) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"no status file at {path} (is the client running with status_file=?)"
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    document = _parse(text)
    if document is None:
        return None, f"{path} does not hold a status document"
    written_at = document.get("written_at")
    if not isinstance(written_at, (int, float)):
        return document, f"{path} has no written_at"
    age = time.time() - written_at
    if age > max_age:
        return document, (
            f"stale: {path} was written {age:.1f}s ago (max {max_age:g}s); "
            f"last state {document.get('state')}, pid {document.get('pid')}"
        )
    return document, None


def _from_url(url: str, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(
            f"--url must be an http URL like http://127.0.0.1:8081, got {url!r}", EXIT_USAGE
        )
    if parts.path in ("", "/"):
        parts = parts._replace(path="/health")
    target = urllib.parse.urlunsplit(parts)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - http(s) only
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"cannot reach {target}: {reason}"
    document = _parse(body.decode("utf-8", "replace"))
    if status == 503:
        return document, (
            _unhealthy_reason(document) if document is not None else f"{target} answered 503"
        )
    if status != 200:
        return document, f"{target} answered HTTP {status}"
    if document is None:
        return None, f"{target} did not answer with a status document"
    return document, None


def _parse(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "state" in document else None


def _unhealthy_reason(document: dict[str, Any]) -> str:
    state = document.get("state")
    detail = document.get("detail") or document.get("last_error") or ""
    why = f"unhealthy: state {state}"
    if state == "connected" and document.get("authorized") is not True:
        why += ", not logged in"
    elif state == "connected":
        why += ", no recent keepalive pong"
    return f"{why}{f' ({detail})' if detail else ''}"


def _summary(document: dict[str, Any]) -> str:
    rtt = document.get("rtt")
    rtt_text = f", rtt {rtt * 1000:.0f}ms" if isinstance(rtt, (int, float)) else ""
    return (
        f"healthy: {document.get('state')}{rtt_text}, "
        f"reconnects {document.get('reconnects_total')}, pid {document.get('pid')}"
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
