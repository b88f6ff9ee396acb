"""``resilient-tg check STORE_URL``: connect once with a session that is not in use,
print its health, and let go of it.

Unlike ``status`` this opens the session, so it takes the session's lease first: a
session leased by a live process is reported (exit 3, naming the holder) and left
alone, since two users of one auth key get it revoked by Telegram. A store that does
not exist is reported too (exit 3): checking never creates a file or a database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from ._common import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_STORE,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    CliError,
)

__all__ = ["register"]

DESCRIPTION = """\
Check a stored session that no process is using: take its lease (a lease held by a
live process: exit 3, naming the holder), connect with ResilientClient, wait for the
link within --timeout, print the health (lines, or JSON with --json), write the
session back, release the lease.

STORE_URL is a store URL (file:///path, sqlite:///x.db?name=bot, postgresql://...,
env://VAR) or a plain path to a session file.

exit codes: 0 healthy; 1 connected but not logged in (or not healthy); 2 bad
arguments or STORE_URL, or a missing optional dependency; 3 no session (the store
does not exist or is empty; nothing is created), corrupt or unreadable store, or
session in use; 4 the auth key is no longer accepted (AUTH_LOST); 5 could not
connect within --timeout; 6 the server refused the app's api_id/api_hash."""

_LEASE_TTL = 30.0


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="connect once with a session not in use and print its health",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store_url", metavar="STORE_URL", help="where the session is stored")
    parser.add_argument(
        "--api-id",
        type=int,
        default=_env_int("TG_API_ID"),
        help="your app's api_id (default: $TG_API_ID)",
    )
    parser.add_argument(
        "--api-hash",
        default=os.environ.get("TG_API_HASH"),
        help="your app's api_hash (default: $TG_API_HASH; the environment keeps it out of ps)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the link (default: 30)",
    )
    parser.add_argument(
        "--test-server-key",
        metavar="PEM",
        help="trust this MTProtoTestServer public key (a PEM file); for test servers only",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log connection transitions on stderr"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Connect, report, release; the exit code says how it went (see the description)."""
    if args.api_id is None or not args.api_hash:
        raise CliError(
            "--api-id and --api-hash are required (or TG_API_ID/TG_API_HASH)", EXIT_USAGE
        )
    if args.test_server_key is not None:
        _trust(args.test_server_key)
    _quiet_logging(args.verbose)
    if "://" not in args.store_url:  # a plain path to a session file
        args.store_url = Path(args.store_url).resolve().as_uri()
    code, reason, health = asyncio.run(_check(args))
    if args.json:
        document = {"ok": code == EXIT_OK, "exit_code": code, "reason": reason, "health": health}
        print(json.dumps(document, indent=2, sort_keys=True))
    elif health is not None:
        print(_human(health))
    if code != EXIT_OK:
        raise CliError(reason or "not healthy", code)
    return EXIT_OK


async def _check(args: argparse.Namespace) -> tuple[int, str | None, dict[str, Any] | None]:
    from .. import ReconnectPolicy, ResilientClient, SessionCorruptError, SessionInUseError
    from ..stores import default_holder
    from ..stores._messages import store_error_text, without_store
    from ._readonly import require_existing
    from .session import open_store_arg

    url = args.store_url
    store = open_store_arg(url)
    require_existing(url, store)  # checking never creates the store
    where = store.describe()
    holder = default_holder()
    try:
        data = await store.load()
        if data is None:
            await store.aclose()
            return (
                EXIT_STORE,
                f"{where} holds no session (create one with resilient-tg login)",
                None,
            )
        # Fail fast on a live holder instead of waiting for it like a service would.
        await store.acquire_lease(holder, _LEASE_TTL)
        await store.release_lease(holder)
    except SessionInUseError as exc:
        await store.aclose()
        until = f" until {time.ctime(exc.expires_at)}" if exc.expires_at else ""
        return EXIT_STORE, f"{where} is in use by {exc.holder}{until}; not touching it", None
    except SessionCorruptError as exc:
        await store.aclose()
        return EXIT_STORE, f"{where}: {without_store(where, str(exc))}", None
    except ImportError as exc:  # a driver of the store's extra is missing: as for every command
        await store.aclose()
        raise CliError(f"{where} needs an optional dependency: {exc}", EXIT_USAGE) from None
    except Exception as exc:  # noqa: BLE001 - any store failure is exit 3, in one line
        await store.aclose()
        return EXIT_STORE, f"cannot read {where}: {store_error_text(where, exc)}", None

    timeout = float(args.timeout)
    client = ResilientClient(
        store,
        args.api_id,
        args.api_hash,
        reconnect=ReconnectPolicy(max_delay=min(5.0, timeout), connect_timeout=min(10.0, timeout)),
        shutdown_timeout=5.0,
        holder=holder,
    )
    deadline = time.monotonic() + timeout
    outcome: tuple[int, str | None] | None = None
    health: dict[str, Any] | None = None
    try:
        # The outer bound only matters if another process took the lease in the meantime
        # (entering then waits for it); the link itself is bounded by the deadline.
        with anyio.move_on_after(timeout + 1.0):
            async with client:
                outcome = await _wait_healthy(client, deadline)
                health = client.health().to_dict()
    except SessionCorruptError as exc:
        return EXIT_STORE, f"{where}: {without_store(where, str(exc))}", None
    except Exception as exc:  # noqa: BLE001 - the store failed while entering: exit 3
        return EXIT_STORE, f"cannot use {where}: {store_error_text(where, exc)}", None
    if outcome is None:
        if _rejected(client):
            return EXIT_REJECTED, _rejected_reason(client), None
        lease = client.health().lease
        if lease is not None and not lease.ours:
            return EXIT_STORE, f"{where} is in use by {lease.holder}; not touching it", None
        return EXIT_NETWORK, f"could not connect within {timeout:g}s", None
    return outcome[0], outcome[1], health


async def _wait_healthy(client: Any, deadline: float) -> tuple[int, str | None]:
    """Wait for CONNECTED, then for the first pong; map the outcome to an exit code."""
    from .. import AppRejectedError, AuthLostError, NotConnectedError

    try:
        await client.wait_connected(max(0.0, deadline - time.monotonic()))
    except AuthLostError as exc:
        return EXIT_AUTH, f"the auth key is no longer accepted ({exc.reason or exc})"
    except AppRejectedError as exc:
        return EXIT_REJECTED, (
            f"the server refuses this api_id/api_hash ({exc.reason}); check --api-id and "
            "--api-hash (or TG_API_ID/TG_API_HASH) against my.telegram.org"
        )
    except TimeoutError:
        health = client.health()
        last = f" (last error: {health.last_error})" if health.last_error else ""
        return EXIT_NETWORK, f"could not connect within --timeout{last}"
    except NotConnectedError as exc:
        return EXIT_NETWORK, f"could not connect: {exc}"
    # CONNECTED; healthy also needs a pong, which follows within one keepalive timeout.
    while time.monotonic() < deadline:
        health = client.health()
        if health.healthy or health.authorized is False:
            break
        await anyio.sleep(0.02)
    health = client.health()
    if health.healthy:
        return EXIT_OK, None
    if health.authorized is False:
        return EXIT_UNHEALTHY, "connected, but the session is not logged in"
    return EXIT_UNHEALTHY, f"connected, but not healthy (state {health.state.value})"


def _rejected(client: Any) -> bool:
    """The client ended in REJECTED: the server refused the app's api_id/api_hash."""
    return str(client.health().state.value) == "rejected"


def _rejected_reason(client: Any) -> str:
    last = client.health().last_error
    return "the server refused the app's api_id/api_hash; fix the configuration" + (
        f" ({last})" if last else ""
    )


def _human(health: dict[str, Any]) -> str:
    def when(value: Any) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "-"

    store = health.get("store") or {}
    rtt = health.get("rtt")
    skew = health.get("clock_skew")
    rows = [
        ("store", f"{store.get('kind', '?')} {store.get('location', '')}".strip()),
        ("state", health.get("state")),
        ("healthy", "yes" if health.get("healthy") else "no"),
        ("authorized", _yes_no(health.get("authorized"))),
        ("rtt", f"{rtt * 1000:.0f} ms" if isinstance(rtt, (int, float)) else "-"),
        ("clock skew", f"{skew:+.1f} s" if isinstance(skew, (int, float)) else "-"),
        ("last pong", when(health.get("last_pong_at"))),
        ("last error", health.get("last_error") or "-"),
    ]
    return "\n".join(f"{name:<11} {value}" for name, value in rows)


def _yes_no(value: Any) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _trust(pem_arg: str) -> None:
    from ..testing import trust_test_server

    try:
        pem = pem_arg if pem_arg.lstrip().startswith("-----BEGIN") else Path(pem_arg).read_text()
    except OSError as exc:
        raise CliError(
            f"cannot read --test-server-key {pem_arg}: {exc.strerror}", EXIT_USAGE
        ) from None
    try:
        trust_test_server(pem)
    except ValueError as exc:
        raise CliError(f"--test-server-key: {exc}", EXIT_USAGE) from None


def _quiet_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("resilient-tg check: %(message)s"))
    package = logging.getLogger("resilient_tg")
    package.addHandler(handler)
    package.setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("telethon").setLevel(logging.CRITICAL)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
