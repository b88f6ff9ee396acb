"""What every ``resilient-tg fleet`` action shares: the options that name the fleet's
database and key, opening a `FleetAdmin` from them, and its errors as one-line CliErrors.

The database URL comes from ``--db`` or ``$RESILIENT_TG_FLEET_DB``; the encryption key
from a variable (``--key-env``) or a file (``--key-file``), never from the command line,
which other users of the machine can read. Messages name the database without its
password.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .._errors import LeaseLostError, SessionCorruptError, SessionInUseError
from ..fleet import AccountExistsError, FleetAdmin, UnknownAccountError
from ..fleet._admin import DEFAULT_WORKER_TTL
from ._common import EXIT_STORE, EXIT_USAGE, CliError

__all__ = ["DB_ENV", "admin_errors", "common_options", "open_admin"]

DB_ENV = "RESILIENT_TG_FLEET_DB"


def common_options() -> argparse.ArgumentParser:
    """The options of every action (a parent parser: they go after the action)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("the fleet's database")
    group.add_argument(
        "--db",
        metavar="URL",
        help=f"the fleet's database (default: ${DB_ENV}); postgresql://, mariadb://, "
        "mysql:// or sqlite:///; prefer the variable when the URL holds a password",
    )
    group.add_argument(
        "--table-prefix", metavar="PREFIX", help="the fleet's table prefix (default: resilient_tg_)"
    )
    key = group.add_mutually_exclusive_group()
    key.add_argument(
        "--key-env", metavar="VAR", help="the fleet's encryption key is in this variable"
    )
    key.add_argument(
        "--key-file", metavar="PATH", help="the fleet's encryption key is in this file"
    )
    group.add_argument(
        "--worker-ttl",
        type=float,
        default=DEFAULT_WORKER_TTL,
        metavar="SECONDS",
        help="a worker whose heartbeat is older is not live (default: %(default)g)",
    )
    return parser


def open_admin(args: argparse.Namespace) -> FleetAdmin:
    """A FleetAdmin from the common options (usage errors for what is missing or bad)."""
    url = args.db or os.environ.get(DB_ENV, "").strip()
    if not url:
        raise CliError(f"needs --db URL or ${DB_ENV} (the fleet's database)", EXIT_USAGE)
    if not args.worker_ttl > 0:
        raise CliError("--worker-ttl must be > 0 seconds", EXIT_USAGE)
    key: str | None = None
    if args.key_env is not None and not os.environ.get(args.key_env, "").strip():
        raise CliError(f"--key-env: ${args.key_env} is not set or empty", EXIT_USAGE)
    if args.key_file is not None:
        try:
            key = Path(args.key_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise CliError(f"cannot read --key-file {args.key_file}: {why}", EXIT_USAGE) from None
    try:
        return FleetAdmin(
            url,
            table_prefix=args.table_prefix,
            encryption_key=key,
            encryption_key_env=args.key_env,
            worker_ttl=args.worker_ttl,
        )
    except ValueError as exc:
        # Our messages never echo the URL or the key.
        raise CliError(f"bad fleet database or key: {exc}", EXIT_USAGE) from None
    except ImportError as exc:
        raise CliError(f"the fleet needs an optional dependency: {exc}", EXIT_USAGE) from None


@contextlib.contextmanager
def admin_errors(admin: FleetAdmin) -> Iterator[None]:
    """Map what FleetAdmin raises to one line and an exit code (never a secret)."""
    try:
        yield
    except CliError:
        raise
    except (UnknownAccountError, AccountExistsError) as exc:
        hint = " (--replace replaces it)" if isinstance(exc, AccountExistsError) else ""
        raise CliError(f"{exc}{hint}", EXIT_STORE) from None
    except SessionInUseError as exc:
        raise CliError(
            f"{exc}; stop that process first (two users of one auth key get it revoked)",
            EXIT_STORE,
        ) from None
    except (SessionCorruptError, LeaseLostError) as exc:
        raise CliError(str(exc), EXIT_STORE) from None
    except FileNotFoundError as exc:
        raise CliError(f"{exc.filename}: no such file", EXIT_STORE) from None
    except ImportError as exc:
        raise CliError(f"this needs an optional dependency: {exc}", EXIT_USAGE) from None
    except ValueError as exc:  # a bad account name, store URL or setting
        raise CliError(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # ConnectionError included: the database is unreachable
        what = str(exc) or exc.strerror or type(exc).__name__
        if not what.startswith(admin.describe()):
            what = f"{admin.describe()}: {what}"
        raise CliError(f"cannot use the fleet's database: {what}", EXIT_STORE) from None
    except Exception as exc:
        import sqlalchemy as sa

        if not isinstance(exc, sa.exc.SQLAlchemyError):
            raise
        from ..stores._sql_engine import brief

        raise CliError(
            f"{admin.describe()}: the database refused the operation ({brief(exc)})",
            EXIT_STORE,
        ) from None
