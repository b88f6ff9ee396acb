"""``resilient-tg session export|import|copy``: move a session between stores and
Telethon's formats (``.session`` SQLite files, StringSession strings).

A session is the account: its auth key logs in without a code. So secrets are
written only where the user says (``--output FILE``, created 0600, or ``--stdout``),
errors name what is wrong and never show the data, and copies take the stores'
leases so that no live process writes the session meanwhile. The file formats are
read and written in `._export_files`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import (
    LeaseLostError,
    NotConnectedError,
    SessionCorruptError,
    SessionInUseError,
)
from ..stores import MemoryStore, SessionData, SessionStore, default_holder, encode
from ..stores import open_store as _open_store
from ..stores._messages import without_store
from ._common import EXIT_CODES_HELP, EXIT_OK, EXIT_STORE, EXIT_USAGE, CliError
from ._export_files import read_session_file, string_session, write_private, write_telethon_file
from ._readonly import require_existing

__all__ = ["check_writable", "open_store_arg", "register", "store_errors"]

LEASE_TTL = 30.0

_EXPORT_EXAMPLES = """examples:
  resilient-tg session export file:///data/s.json --string --output s.txt
  resilient-tg session export 'sqlite:////data/s.db?name=bot' --telethon bot.session
  resilient-tg session export file:///data/s.json --json --stdout | ssh host 'cat > s.json'"""
_IMPORT_EXAMPLES = """examples:
  resilient-tg session import old_bot.session file:///data/s.json
  resilient-tg session import session.json 'sqlite:////data/s.db?name=bot'
  resilient-tg session import --string-env TG_SESSION file:///data/s.json
  printf '%s\\n' "$STRING" | resilient-tg session import --string-stdin file:///data/s.json
  resilient-tg session import file:///data/s.json 'postgresql://db/app?name=bot'"""


def register(subparsers: Any) -> None:
    """Add ``session`` with its ``export``, ``import`` and ``copy`` subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "session",
        help="export, import or copy a session (stores, .session files, StringSession)",
        description=_wrap(
            "Move a session between stores, Telethon .session files and "
            "StringSession strings. A session logs in without a code: treat it as a password."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    export = actions.add_parser(
        "export",
        help="write a store's session as a string, a .session file or JSON",
        description=_wrap(
            "Write the session in STORE_URL as a Telethon StringSession (--string), "
            "a Telethon .session file (--telethon FILE) or resilient_tg's JSON document "
            "(--json). A string or JSON goes to --output FILE (created 0600) or, only when "
            "asked with --stdout, to standard output."
        ),
        epilog=f"{_EXPORT_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("store", metavar="STORE_URL")
    fmt = export.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--string", action="store_true", help="a Telethon StringSession")
    fmt.add_argument("--telethon", metavar="FILE", help="a Telethon .session (SQLite) file")
    fmt.add_argument("--json", action="store_true", help="resilient_tg's JSON document")
    where = export.add_mutually_exclusive_group()
    where.add_argument("--output", "-o", metavar="FILE", help="write to FILE (mode 0600)")
    where.add_argument("--stdout", action="store_true", help="print the secret to standard output")
    export.add_argument("--force", action="store_true", help="replace an existing output file")
    export.set_defaults(run=_run_export)

    imp = actions.add_parser(
        "import",
        help="put a session from a .session file, JSON, string or store into a store",
        usage="%(prog)s [-h] [--string-env VAR | --string-stdin] [--force] [SOURCE] STORE_URL",
        description=_wrap(
            "Save a session into STORE_URL. SOURCE is a Telethon .session file, a "
            "JSON file written by `session export --json`, or a store URL (then this is "
            "`session copy`); or give a StringSession with --string-env VAR or --string-stdin. "
            "A store that already holds a session is left alone unless --force."
        ),
        epilog=f"{_IMPORT_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("paths", nargs="+", metavar="[SOURCE] STORE_URL", help=argparse.SUPPRESS)
    string = imp.add_mutually_exclusive_group()
    string.add_argument(
        "--string-env", metavar="VAR", help="read a StringSession from this variable"
    )
    string.add_argument(
        "--string-stdin", action="store_true", help="read a StringSession from standard input"
    )
    imp.add_argument("--force", action="store_true", help="replace the session in STORE_URL")
    imp.set_defaults(run=_run_import)

    copy = actions.add_parser(
        "copy",
        help="copy a session from one store to another (both leases held)",
        description=_wrap(
            "Copy the session in FROM_URL into TO_URL, holding both stores' leases "
            "so that no live process changes either meanwhile. TO_URL must be empty unless "
            "--force. Do not run both copies at once: Telegram revokes a key used twice."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("source", metavar="FROM_URL")
    copy.add_argument("target", metavar="TO_URL")
    copy.add_argument("--force", action="store_true", help="replace the session in TO_URL")
    copy.set_defaults(run=_run_copy)


# Shared with login ----------------------------------------------------------------------


def open_store_arg(url: str) -> SessionStore:
    """open_store() with its errors as usage errors (exit 2)."""
    try:
        return _open_store(url)
    except ValueError as exc:
        raise CliError(f"bad store URL: {exc}", EXIT_USAGE) from None
    except ImportError as exc:
        raise CliError(f"this store needs an optional dependency: {exc}", EXIT_USAGE) from None


@contextlib.contextmanager
def store_errors(store: SessionStore) -> Iterator[None]:
    """Map store failures to exit 3 with the store's own message (it names the store,
    never the data)."""
    try:
        yield
    except CliError:
        raise
    except NotConnectedError:
        raise  # the Telegram link, not the store: the caller maps it
    except SessionInUseError as exc:
        raise CliError(
            f"{exc}; stop that process first (two users of one auth key get it revoked)",
            EXIT_STORE,
        ) from None
    except (SessionCorruptError, LeaseLostError) as exc:
        raise CliError(str(exc), EXIT_STORE) from None
    except ImportError as exc:
        raise CliError(
            f"{store.describe()} needs an optional dependency: {exc}", EXIT_USAGE
        ) from None
    except OSError as exc:  # ConnectionError included: the store is unreachable
        where = store.describe()  # named once: a store's own message often starts with it
        what = exc.strerror or without_store(where, str(exc)) or type(exc).__name__
        raise CliError(f"{where}: cannot use the store ({what})", EXIT_STORE) from None


def _holder() -> str:
    return f"resilient-tg-session@{default_holder()}"


# export ---------------------------------------------------------------------------------


def _run_export(args: argparse.Namespace) -> int:
    if args.telethon is not None:
        if args.output is not None or args.stdout:
            raise CliError(
                "--telethon FILE writes FILE; --output/--stdout do not apply", EXIT_USAGE
            )
    elif args.output is None and not args.stdout:
        raise CliError(
            "refusing to print a session (it logs in as the account) without --stdout; "
            "or write it to a private file with --output FILE",
            EXIT_USAGE,
        )
    destination = _telethon_name(args) if args.telethon is not None else args.output
    if destination is not None and not args.force and os.path.lexists(destination):
        raise CliError(f"{destination} exists; --force replaces it", EXIT_STORE)
    data, holder = asyncio.run(_load_for_export(args.store))
    if holder:
        print(
            f"warning: {holder} is using this session now; do not run the exported copy "
            "while it does (Telegram revokes a key used twice at once)",
            file=sys.stderr,
        )
    if args.telethon is not None:
        path = _telethon_name(args)
        write_telethon_file(path, data, force=args.force)
        print(f"wrote the session to {path} (Telethon .session, mode 0600)", file=sys.stderr)
        return EXIT_OK
    text = string_session(data) + "\n" if args.string else encode(data).decode() + "\n"
    if args.stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_private(Path(args.output), text.encode(), force=args.force)
        kind = "StringSession" if args.string else "JSON"
        print(f"wrote the session to {args.output} ({kind}, mode 0600)", file=sys.stderr)
    return EXIT_OK


def _telethon_name(args: argparse.Namespace) -> str:
    name = str(args.telethon)
    # Telethon appends ".session" to any other name; say where the file really is.
    return name if name.endswith(".session") else name + ".session"


async def _load_for_export(url: str) -> tuple[SessionData, str]:
    store = open_store_arg(url)
    require_existing(url, store)  # exporting never creates the store
    try:
        with store_errors(store):
            data = await store.load()
            lease = await store.current_lease()
    finally:
        with contextlib.suppress(Exception):
            await store.aclose()
    data = _exportable(data, store.describe())
    return data, lease.holder if lease is not None else ""


def _exportable(data: SessionData | None, where: str) -> SessionData:
    if data is None:
        raise CliError(f"{where} holds no session", EXIT_STORE)
    if data.auth_key is None:
        raise CliError(
            f"{where} holds a session without an auth key (it never connected): "
            "nothing to move; log in first",
            EXIT_STORE,
        )
    return data


# import ---------------------------------------------------------------------------------


def _run_import(args: argparse.Namespace) -> int:
    from ..stores._env import parse_string_session

    from_string = args.string_env is not None or args.string_stdin
    expected = 1 if from_string else 2
    if len(args.paths) != expected:
        shape = "STORE_URL" if from_string else "SOURCE STORE_URL"
        raise CliError(f"expected {shape}, got {len(args.paths)} argument(s)", EXIT_USAGE)
    target = args.paths[-1]
    if args.string_env is not None:
        raw = os.environ.get(args.string_env, "")
        if not raw.strip():
            raise CliError(f"${args.string_env} is not set or empty", EXIT_STORE)
        data = _guard(lambda: parse_string_session(raw, source=f"${args.string_env}"))
        what = f"${args.string_env}"
    elif args.string_stdin:
        # On a terminal, read it like a password: it is one.
        raw = (
            getpass.getpass("Session string: ", stream=sys.stderr)
            if sys.stdin.isatty()
            else sys.stdin.readline()
        )
        if not raw.strip():
            raise CliError("no session string on standard input", EXIT_STORE)
        data = _guard(lambda: parse_string_session(raw, source="standard input"))
        what = "standard input"
    elif "://" in args.paths[0]:
        return asyncio.run(_copy(args.paths[0], target, force=args.force))
    else:
        what = args.paths[0]
        data = read_session_file(what)
    data = _exportable(data, what)
    where = asyncio.run(_save_into(target, data, force=args.force))
    print(f"imported {_summary(data)} from {what} into {where}", flush=True)
    return EXIT_OK


def _guard(parse: Any) -> SessionData:
    try:
        result: SessionData = parse()
    except SessionCorruptError as exc:
        raise CliError(str(exc), EXIT_STORE) from None
    return result


def check_writable(store: SessionStore) -> None:
    """Refuse stores that would drop what is saved into them (memory, env without fallback)."""
    from ..stores import EnvStringStore

    if isinstance(store, EnvStringStore) and store.fallback is None:
        raise CliError(
            f"{store.describe()} cannot be written; use `session export --string` and set "
            "the variable, or give it a fallback (env://VAR?fallback=file:///...)",
            EXIT_USAGE,
        )
    if isinstance(store, MemoryStore):
        raise CliError("memory:// ends with this command; choose a lasting store", EXIT_USAGE)


async def _ensure_replaceable(store: SessionStore, *, force: bool) -> None:
    try:
        existing = await store.load()
    except SessionCorruptError as exc:
        if force:
            return
        raise CliError(f"{exc}; --force replaces it", EXIT_STORE) from None
    if existing is not None and not force:
        raise CliError(
            f"{store.describe()} already holds a session; --force replaces it "
            "(export it first if you may need it)",
            EXIT_STORE,
        )


async def _save_into(url: str, data: SessionData, *, force: bool) -> str:
    """Save into an empty (or, with force, any) store under its lease; returns where."""
    store = open_store_arg(url)
    check_writable(store)
    holder = _holder()
    try:
        with store_errors(store):
            await store.acquire_lease(holder, LEASE_TTL)
            try:
                await _ensure_replaceable(store, force=force)
                await store.save(data)
            finally:
                await store.release_lease(holder)
    finally:
        with contextlib.suppress(Exception):
            await store.aclose()
    return store.describe()


# copy -----------------------------------------------------------------------------------


def _run_copy(args: argparse.Namespace) -> int:
    return asyncio.run(_copy(args.source, args.target, force=args.force))


async def _copy(source_url: str, target_url: str, *, force: bool) -> int:
    if source_url == target_url:
        raise CliError("FROM_URL and TO_URL are the same store", EXIT_USAGE)
    source = open_store_arg(source_url)
    require_existing(source_url, source)  # the source is only read: never created
    target = open_store_arg(target_url)
    check_writable(target)
    holder = _holder()
    try:
        with store_errors(source):
            await source.acquire_lease(holder, LEASE_TTL)
        try:
            with store_errors(source):
                data = _exportable(await source.load(), source.describe())
            with store_errors(target):
                await target.acquire_lease(holder, LEASE_TTL)
                try:
                    await _ensure_replaceable(target, force=force)
                    await target.save(data)
                finally:
                    await target.release_lease(holder)
        finally:
            with contextlib.suppress(Exception):
                await source.release_lease(holder)
    finally:
        for store in (source, target):
            with contextlib.suppress(Exception):
                await store.aclose()
    # describe(), not the URLs: a database URL may carry a password.
    print(f"copied {_summary(data)} from {source.describe()} to {target.describe()}", flush=True)
    return EXIT_OK


def _summary(data: SessionData) -> str:
    parts = [f"dc {data.dc_id} at {data.server_address}:{data.port}"]
    if data.update_state is not None:
        parts.append(f"pts {data.update_state.pts}")
    parts.append(f"{len(data.entities)} cached entities")
    return "the session (" + ", ".join(parts) + ")"


def _wrap(text: str) -> str:
    """Descriptions are wrapped by hand: the raw formatter keeps the examples' layout."""
    return textwrap.fill(text, width=88)
