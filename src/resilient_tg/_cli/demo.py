"""``resilient-tg demo``: the library surviving faults, offline, in one command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ._common import EXIT_OK, EXIT_UNHEALTHY

__all__ = ["register"]

DESCRIPTION = """\
Run a ResilientClient on a file session against a local MTProto test server and a
fault-injecting proxy (no credentials, no internet), have a second test user send it
messages, and break the network on the way: a reset, refused connects, a black hole,
a server restart and a process restart that resumes from the stored session.

Shows a live status line on a terminal (plain lines otherwise) and ends with a table:
for each fault, how long until the loss was detected and until the client was
connected again, and how many messages were sent, received and duplicated. Exits 0
only if every message arrived exactly once, 1 otherwise."""


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="survive scripted faults against a local test server (offline)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (faults, totals, ok) and nothing else on stdout",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="shorter keepalive, backoff and refusal, fewer messages (a few seconds)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 only if every message arrived exactly once."""
    from .._demo import DEFAULT, FAST, Console, render_report, run_demo

    console = Console(sys.stdout, quiet=args.json)
    report = asyncio.run(run_demo(FAST if args.fast else DEFAULT, console))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print()
        print(render_report(report))
    return EXIT_OK if report.ok else EXIT_UNHEALTHY
