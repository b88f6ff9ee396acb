"""The ``resilient-tg`` command: demo, login, session export/import/copy, status, check,
test-server, fleet.

Exit codes: one per situation, whichever command meets it; the table is
``EXIT_CODES_HELP`` in ``resilient_tg._cli._common`` (shown by ``resilient-tg --help``)
and in docs/deploying.md, "Exit codes".
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from ._cli._common import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE, CliError

__all__ = ["main"]

# Each subcommand lives in resilient_tg._cli.<module> and provides register(subparsers).
_SUBCOMMANDS = ("demo", "login", "session", "status", "check", "test_server", "fleet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-tg",
        description="Keep a Telegram MTProto client alive: sessions, health, and an offline demo.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resilient-tg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"resilient_tg._cli.{name}")
        except ImportError as exc:
            # One broken subcommand (a missing optional dependency) must not take the
            # others down: a container healthcheck runs `status` whatever else is broken.
            _register_unavailable(subparsers, name, exc)
            continue
        module.register(subparsers)
    return parser


def _register_unavailable(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, exc: ImportError
) -> None:
    command = name.replace("_", "-")
    reason = f"{type(exc).__name__}: {exc}"
    parser = subparsers.add_parser(command, help=f"(unavailable: {reason})", add_help=True)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        raise CliError(f"this command is unavailable here ({reason})", EXIT_USAGE)

    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (documented above)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"resilient-tg {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
