"""``resilient-tg fleet status|add|remove|rebalance|disable|enable``: operate a fleet's
database while its workers run (`resilient_tg.fleet.FleetAdmin` underneath).

The command never runs an account and never moves one: the workers claim, hand over and
stop accounts by themselves on their next claim round. ``rebalance`` therefore observes
(it prints each worker's share and, with ``--wait``, waits for the workers to reach it);
``disable``/``enable``/``remove`` change rows that the workers act on. ``add`` is in
`.fleet_add`; the database options are in `._fleet_db`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..cache import CacheBackend
from ..fleet import AccountInfo, AccountStatus, Balance, FleetAdmin, WorkerInfo
from . import fleet_add
from ._common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_STORE,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    CliError,
)
from ._fleet_db import DB_ENV, admin_errors, common_options, open_admin
from ._prompt import Prompter

__all__ = ["register"]

#: How often ``rebalance --wait`` reads the database again (seconds).
POLL_INTERVAL = 1.0
DEFAULT_WAIT = 60.0

_EXAMPLES = f"""examples:
  export {DB_ENV}=postgresql://app@db.internal/telegram
  resilient-tg fleet status
  resilient-tg fleet add support-1 --phone +15550001
  resilient-tg fleet add bot-7 --bot-token-env BOT7_TOKEN
  resilient-tg fleet add old-bot --import /data/old_bot.session
  resilient-tg fleet disable support-1 --reason "moving to a new number"
  resilient-tg fleet rebalance --wait 120
  resilient-tg fleet remove support-1 --yes"""


def register(subparsers: Any) -> None:
    """Add ``fleet`` and its actions."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fleet",
        help="operate a fleet: accounts and workers in one database (status, add, remove...)",
        description=_wrap(
            "Operate a fleet's database: list its workers and accounts, add accounts "
            "(log in, or import a session), park, enable and remove them, and watch the "
            "workers share them out. The workers act on every change by themselves."
        ),
        epilog=f"{_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    common = common_options()

    status = actions.add_parser(
        "status",
        parents=[common],
        help="the live workers and every account (status, holder, reason)",
        description=_wrap(
            "Print the live workers (running count, fair share, heartbeat) and every "
            "account (status, the worker holding it, the reason it is parked), with the "
            "counts by status. --json prints one JSON document instead."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(run=_run_status)

    fleet_add.register(actions, common)

    remove = actions.add_parser(
        "remove",
        parents=[common],
        help="delete an account, its session and its lease (asks unless --yes)",
        description=_wrap(
            "Delete the account NAME with its session and its lease, in one transaction. "
            "A worker still running it is fenced off: its next lease renewal or save is "
            "refused, and it stops the account. The session is gone for good: export it "
            "first (`resilient-tg session export`) if it may be needed again. Asks for "
            "confirmation on standard input unless --yes."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    remove.add_argument(
        "--cache",
        metavar="URL",
        help="also purge the account's message cache: the fleet's cache backend, "
        "redis://... or an SQL URL (?table_prefix=... as the workers use it)",
    )
    remove.add_argument(
        "--cache-prefix",
        default="resilient_tg:cache",
        metavar="PREFIX",
        help="the Redis key prefix of --cache (default: %(default)s)",
    )
    remove.set_defaults(run=_run_remove)

    disable = actions.add_parser(
        "disable",
        parents=[common],
        help="park an account: its worker stops it and nobody claims it",
        description=_wrap(
            "Set the account NAME to disabled: the worker running it stops it, and no "
            "worker claims it until `fleet enable NAME`."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    disable.add_argument("name", metavar="NAME")
    disable.add_argument(
        "--reason", default="disabled by an operator", help="why (shown by status)"
    )
    disable.set_defaults(run=_run_disable)

    enable = actions.add_parser(
        "enable",
        parents=[common],
        help="let the workers claim an account again (also after auth_lost or rejected)",
        description=_wrap(
            "Set the account NAME to active, so a worker claims it. Also for an account "
            "parked as auth_lost or rejected once its cause is fixed (a new session "
            "imported with `fleet add NAME --import ... --replace`, a new api_id)."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enable.add_argument("name", metavar="NAME")
    enable.set_defaults(run=_run_enable)

    rebalance = actions.add_parser(
        "rebalance",
        parents=[common],
        help="show each worker's running count against its fair share; --wait for balance",
        description=_wrap(
            "Print each live worker's running count against its fair share and the "
            "moves still to come. This command only observes: the workers rebalance by "
            "themselves (a bounded number of handovers at a time), so there is nothing "
            "to trigger. With --wait [SECONDS] (default 60) it waits until every live "
            "worker is within one session of its share (exit 0), or exits 1 when the "
            "time passes."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rebalance.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=DEFAULT_WAIT,
        default=None,
        metavar="SECONDS",
        help=f"wait until balanced, at most SECONDS (default {DEFAULT_WAIT:g})",
    )
    rebalance.set_defaults(run=_run_rebalance)


# status ---------------------------------------------------------------------------------


def _run_status(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    workers, accounts, balance = asyncio.run(_read_status(admin))
    if args.json:
        print(json.dumps(_status_document(admin, workers, accounts, balance), indent=2))
    else:
        _print_status(admin, workers, accounts, balance)
    return EXIT_OK


async def _read_status(
    admin: FleetAdmin,
) -> tuple[list[WorkerInfo], list[AccountInfo], Balance]:
    async with admin:
        with admin_errors(admin):
            return await admin.workers(), await admin.accounts(), await admin.balance()


def _counts(accounts: Sequence[AccountInfo]) -> dict[str, int]:
    counted = Counter(a.status for a in accounts)
    return {status.value: counted.get(status, 0) for status in AccountStatus}


def _status_document(
    admin: FleetAdmin,
    workers: Sequence[WorkerInfo],
    accounts: Sequence[AccountInfo],
    balance: Balance,
) -> dict[str, Any]:
    targets = {w.worker_id: w.target for w in balance.workers}
    return {
        "database": admin.describe(),
        "table_prefix": admin.table_prefix,
        "workers": [
            {
                "worker_id": w.worker_id,
                "host": w.host,
                "pid": w.pid,
                "running": w.running,
                "share": targets.get(w.worker_id, 0),
                "capacity": w.capacity,
                "draining": w.draining,
                "heartbeat_age": round(w.heartbeat_age, 3),
            }
            for w in workers
        ],
        "counts": _counts(accounts),
        "balance": _balance_document(balance),
        "accounts": [
            {
                "name": a.name,
                "status": a.status.value,
                "reason": a.reason,
                "holder": a.holder,
                "lease_left": round(a.lease_left, 3),
                "in_handover": a.in_handover,
                "has_session": a.has_session,
            }
            for a in accounts
        ],
    }


def _balance_document(balance: Balance) -> dict[str, Any]:
    return {
        "balanced": balance.balanced,
        "active": balance.active,
        "unclaimed": balance.unclaimed,
        "in_handover": balance.in_handover,
        "moves": balance.moves,
    }


def _print_status(
    admin: FleetAdmin,
    workers: Sequence[WorkerInfo],
    accounts: Sequence[AccountInfo],
    balance: Balance,
) -> None:
    targets = {w.worker_id: w.target for w in balance.workers}
    print(f"fleet in {admin.describe()} (tables {admin.table_prefix}*)")
    print(f"\nworkers: {len(workers)} live")
    if workers:
        rows = [
            (
                w.worker_id,
                w.host,
                str(w.pid),
                str(w.running),
                str(targets.get(w.worker_id, 0)),
                "-" if w.capacity is None else str(w.capacity),
                "draining" if w.draining else "running",
                f"{w.heartbeat_age:.1f}s ago",
            )
            for w in workers
        ]
        _table(
            ("WORKER", "HOST", "PID", "RUNNING", "SHARE", "CAPACITY", "STATE", "HEARTBEAT"),
            rows,
        )
    counts = ", ".join(f"{n} {status}" for status, n in _counts(accounts).items() if n)
    print(f"\naccounts: {len(accounts)}" + (f" ({counts})" if counts else ""))
    if accounts:
        account_rows = [
            (
                a.name,
                a.status.value + (" (moving)" if a.in_handover else ""),
                a.holder or "-",
                a.reason or ("no session yet" if not a.has_session else ""),
            )
            for a in accounts
        ]
        _table(("NAME", "STATUS", "HOLDER", "REASON"), account_rows)
    if balance.unclaimed:
        print(f"\n{balance.unclaimed} active account(s) run by no worker now")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        cells = [_one_line(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  " + "  ".join(cells).rstrip())


def _one_line(text: str) -> str:
    return " ".join(text.split())


# remove, disable, enable ----------------------------------------------------------------


def _run_remove(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    cache = None if args.cache is None else _cache_backend(args.cache, args.cache_prefix)
    holder = asyncio.run(_remove(admin, args.name, ask=not args.yes, cache=cache))
    print(f"removed the account {args.name!r} (its session and lease) from {admin.describe()}")
    if cache is not None:
        print(f"purged its message cache in {cache.describe()}")
    if holder:
        print(f"{holder} was running it; it is fenced off and stops it", file=sys.stderr)
    return EXIT_OK


def _cache_backend(url: str, prefix: str) -> CacheBackend:
    """The cache backend of ``--cache``: Redis for redis://, rediss://, unix://, else SQL."""
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            from ..cache import RedisCacheBackend

            return RedisCacheBackend(url, prefix=prefix)
        from ..cache import SQLCacheBackend

        return SQLCacheBackend(url, pool_size=1, max_overflow=0)
    except (ImportError, ValueError) as exc:
        raise CliError(f"--cache: {exc}", EXIT_USAGE) from None


async def _remove(
    admin: FleetAdmin, name: str, *, ask: bool, cache: CacheBackend | None = None
) -> str:
    try:
        async with admin:
            with admin_errors(admin):
                info = await admin.account(name)  # an unknown name is said before asking
                if ask:
                    await _confirm(
                        f"Remove the account {name!r} ({info.status.value}) with its session "
                        f"from {admin.describe()}? The session cannot be recovered. [y/N] "
                    )
                await admin.remove(name)
            if cache is not None:
                try:
                    await cache.purge(name)
                except Exception as exc:  # noqa: BLE001 - the removal itself is done
                    raise CliError(
                        f"removed the account {name!r}, but purging its message cache in "
                        f"{cache.describe()} failed ({type(exc).__name__}: {exc}); once "
                        f"it is reachable, purge it with `await backend.purge({name!r})`",
                        EXIT_STORE,
                    ) from None
    finally:
        if cache is not None:
            await cache.aclose()
    return info.holder


async def _confirm(question: str) -> None:
    try:
        answer = await Prompter().line(question)
    except CliError:  # standard input ended
        raise CliError(
            "no confirmation on standard input; pass --yes to remove", EXIT_USAGE
        ) from None
    if answer.lower() not in ("y", "yes"):
        raise CliError("not confirmed; nothing was removed", EXIT_USAGE)


def _run_disable(args: argparse.Namespace) -> int:
    return _set_status(args, AccountStatus.DISABLED, args.reason)


def _run_enable(args: argparse.Namespace) -> int:
    return _set_status(args, AccountStatus.ACTIVE, "")


def _set_status(args: argparse.Namespace, status: AccountStatus, reason: str) -> int:
    admin = open_admin(args)

    async def change() -> AccountStatus:
        async with admin:
            with admin_errors(admin):
                before = (await admin.account(args.name)).status
                await admin.set_status(args.name, status, reason)
        return before

    before = asyncio.run(change())
    print(f"account {args.name!r}: {before.value} -> {status.value}")
    return EXIT_OK


# rebalance ------------------------------------------------------------------------------


def _run_rebalance(args: argparse.Namespace) -> int:
    if args.wait is not None and not args.wait >= 0:
        raise CliError("--wait must be >= 0 seconds", EXIT_USAGE)
    admin = open_admin(args)
    return asyncio.run(_rebalance(admin, args.wait))


async def _rebalance(admin: FleetAdmin, wait: float | None) -> int:
    async with admin:
        with admin_errors(admin):
            balance = await admin.balance()
            _print_balance(balance)
            if wait is None:
                return EXIT_OK
            deadline = time.monotonic() + wait
            while not balance.balanced:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CliError(
                        f"not balanced after {wait:g}s: {balance.moves} move(s) still to "
                        f"come, {balance.unclaimed} account(s) unclaimed",
                        EXIT_UNHEALTHY,
                    )
                await asyncio.sleep(min(POLL_INTERVAL, left))
                latest = await admin.balance()
                if latest != balance:
                    _print_balance(latest)
                balance = latest
    return EXIT_OK


def _print_balance(balance: Balance) -> None:
    live = sum(1 for w in balance.workers if not w.draining)
    print(
        f"{live} live worker(s), {balance.active} active account(s): "
        f"{balance.unclaimed} unclaimed, {balance.in_handover} moving now"
    )
    if balance.workers:
        rows = [
            (
                w.worker_id + (" (draining)" if w.draining else ""),
                str(w.running),
                str(w.target),
                f"{w.off_by:+d}",
            )
            for w in balance.workers
        ]
        _table(("WORKER", "RUNNING", "SHARE", "OFF"), rows)
    verdict = "balanced" if balance.balanced else "not balanced"
    print(f"moves still to come: {balance.moves}; {verdict}", flush=True)


def _wrap(text: str) -> str:
    """Descriptions are wrapped by hand: the raw formatter keeps the examples' layout."""
    return textwrap.fill(text, width=88)
