"""``resilient-tg fleet add NAME``: put an account into a fleet's database, by logging it
in (login code and 2FA password, or a bot token: the sign-in of ``resilient-tg login``)
or by importing a session that exists (``--import SOURCE``, ``--string-stdin``).

A login first writes the account as ``pending`` (no worker claims it), logs in through
the account's own SQLStore (its lease held), and sets it ``active`` only once the logged-in
session is saved. A login that fails or is interrupted leaves the account ``pending``
with the reason; ``fleet add NAME`` again resumes it, ``fleet remove NAME`` drops it.

Secrets never come from the command line: the api_hash, the bot token and a proxy URL
(which carries a password) are read from a variable, a file or standard input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from ..fleet import AccountSettings, AccountStatus, FleetAdmin, UnknownAccountError
from ..fleet._accounts import proxy_for_telethon
from ..fleet._sources import SESSION_STRING_PREFIX
from ..stores import open_store
from ._common import EXIT_CODES_HELP, EXIT_OK, EXIT_STORE, EXIT_USAGE, CliError
from ._fleet_db import admin_errors, open_admin
from ._prompt import Prompter
from .login import LoginOptions, log_in_store

__all__ = ["register"]

_EXAMPLES = """examples:
  export TG_API_ID=12345 TG_API_HASH=...     # the fleet's app, from my.telegram.org
  resilient-tg fleet add support-1 --phone +15550001      # code (and 2FA) on stdin
  resilient-tg fleet add bot-7 --bot-token-file /run/secrets/bot7
  resilient-tg fleet add eu-3 --phone +15550003 --api-id 777 --api-hash-env EU_HASH \\
      --proxy-file /run/secrets/eu3_proxy
  resilient-tg fleet add old-bot --import /data/old_bot.session
  resilient-tg fleet add copied --import 'sqlite:////data/sessions.db?name=bot'
  printf '%s\\n' "$STRING" | resilient-tg fleet add from-string --string-stdin"""


def register(actions: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``add`` action to ``fleet``."""
    add: argparse.ArgumentParser = actions.add_parser(
        "add",
        parents=[common],
        help="log an account in (code, 2FA, bot token) or import a session into the fleet",
        description=_wrap(
            "Add the account NAME. Without --import it is logged in like `resilient-tg "
            "login` (phone, login code and 2FA password, or a bot token): the account is "
            "pending meanwhile and becomes active once the login succeeded; a failed or "
            "interrupted login leaves it pending with the reason (run `fleet add NAME` "
            "again to resume, or `fleet remove NAME`). With --import SOURCE (a .session "
            "or JSON file, a store URL such as env://VAR or sqlite:///...) or "
            "--string-stdin, an existing session is copied in and the source is left as "
            "it was; do not keep running it elsewhere."
        ),
        epilog=f"{_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", metavar="NAME")
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--import",
        dest="source",
        metavar="SOURCE",
        help="import this session: a .session or JSON file, or a store URL",
    )
    source.add_argument(
        "--string-stdin", action="store_true", help="import a StringSession read from stdin"
    )
    who = add.add_mutually_exclusive_group()
    who.add_argument("--phone", help="log in this phone number (asked for if missing)")
    who.add_argument("--bot", action="store_true", help="log in a bot; its token from stdin")
    who.add_argument("--bot-token-env", metavar="VAR", help="log in a bot; its token in VAR")
    who.add_argument("--bot-token-file", metavar="PATH", help="log in a bot; its token in PATH")
    app = add.add_argument_group(
        "the account's own app and proxy (default: the fleet's app, no proxy)"
    )
    app.add_argument("--api-id", type=int, help="the account's own api_id")
    app_hash = app.add_mutually_exclusive_group()
    app_hash.add_argument("--api-hash-env", metavar="VAR", help="its api_hash is in VAR")
    app_hash.add_argument("--api-hash-file", metavar="PATH", help="its api_hash is in PATH")
    proxy = app.add_mutually_exclusive_group()
    proxy.add_argument(
        "--proxy-env", metavar="VAR", help="a proxy URL (socks5://user:pw@host:port) in VAR"
    )
    proxy.add_argument("--proxy-file", metavar="PATH", help="a proxy URL in PATH")
    add.add_argument(
        "--disabled", action="store_true", help="add the account disabled (nobody runs it yet)"
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="replace an account of that name (its old session is dropped; a worker "
        "running it is fenced off)",
    )
    add.add_argument("--test-server", metavar="HOST:PORT", help="log in against a test server")
    add.add_argument("--test-server-key", metavar="PEM_FILE", help="the test server's key")
    add.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting after this long, exit 5 (default: 30)",
    )
    add.set_defaults(run=_run_add)


def _run_add(args: argparse.Namespace) -> int:
    """Entry point of ``fleet add``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logging.getLogger("telethon").setLevel(logging.ERROR)
    importing = args.source is not None or args.string_stdin
    logging_in = args.phone or args.bot or args.bot_token_env or args.bot_token_file
    if importing and logging_in:
        raise CliError("--import/--string-stdin import a session; they take no login", EXIT_USAGE)
    if importing and args.test_server is not None:
        raise CliError("--test-server is for a login, not an import", EXIT_USAGE)
    if args.source is not None and args.source.startswith(SESSION_STRING_PREFIX):
        raise CliError(
            "a session string on the command line is visible to other users; use "
            "--string-stdin or --import env://VAR",
            EXIT_USAGE,
        )
    prompter = Prompter()
    admin = open_admin(args)
    if importing:
        return asyncio.run(_import(admin, args, prompter))
    return asyncio.run(_login(admin, args, prompter))


# Settings -------------------------------------------------------------------------------


async def _settings(args: argparse.Namespace, prompter: Prompter) -> AccountSettings | None:
    """The account's own settings from the options; None when none were given."""
    if (args.api_hash_env or args.api_hash_file) and args.api_id is None:
        raise CliError("--api-hash-env/--api-hash-file go with --api-id", EXIT_USAGE)
    api_hash = None
    if args.api_id is not None:
        api_hash = _secret(args.api_hash_env, args.api_hash_file, "the api_hash")
        if api_hash is None:
            api_hash = (await prompter.secret(f"api_hash for api_id {args.api_id}: ")).strip()
        if not api_hash:
            raise CliError("no api_hash given for --api-id", EXIT_USAGE)
    proxy = _secret(args.proxy_env, args.proxy_file, "the proxy URL")
    if args.api_id is None and proxy is None:
        return None
    try:
        return AccountSettings(api_id=args.api_id, api_hash=api_hash, proxy=proxy)
    except ValueError as exc:  # never echoes the URL
        raise CliError(str(exc), EXIT_USAGE) from None


def _secret(env: str | None, path: str | None, what: str) -> str | None:
    """A secret from a variable or a file (stripped); None when neither is given."""
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise CliError(f"{what}: ${env} is not set or empty", EXIT_USAGE)
        return value
    if path is not None:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise CliError(f"{what}: cannot read {path}: {why}", EXIT_USAGE) from None
        if not value:
            raise CliError(f"{what}: {path} is empty", EXIT_USAGE)
        return value
    return None


# Import ---------------------------------------------------------------------------------


async def _import(admin: FleetAdmin, args: argparse.Namespace, prompter: Prompter) -> int:
    settings = await _settings(args, prompter) or AccountSettings()
    if args.string_stdin:
        text = (await prompter.secret("Session string: ")).strip()
        if not text:
            raise CliError("no session string on standard input", EXIT_USAGE)
        source, where = SESSION_STRING_PREFIX + text, "standard input"
    else:
        source = where = args.source
        if "://" in source:
            try:
                where = open_store(source).describe()  # no I/O; no password shown
            except ValueError as exc:
                raise CliError(f"bad store URL: {exc}", EXIT_USAGE) from None
    status = AccountStatus.DISABLED if args.disabled else AccountStatus.ACTIVE
    async with admin:
        with admin_errors(admin):
            data = await admin.import_session(
                args.name, source, settings=settings, status=status, replace=args.replace
            )
    print(
        f"imported the session (dc {data.dc_id} at {data.server_address}:{data.port}) from "
        f"{where} as account {args.name!r} ({status.value}) in {admin.describe()}",
        flush=True,
    )
    return EXIT_OK


# Login ----------------------------------------------------------------------------------


async def _login(admin: FleetAdmin, args: argparse.Namespace, prompter: Prompter) -> int:
    bot_token = _secret(args.bot_token_env, args.bot_token_file, "the bot token")
    test_server, pem = _test_server(args)
    if not args.timeout > 0:
        raise CliError("--timeout must be > 0 seconds", EXIT_USAGE)
    given = await _settings(args, prompter)
    async with admin:
        with admin_errors(admin):
            settings = await _prepare(admin, args.name, given, replace=args.replace, say=prompter)
        try:
            api_id, api_hash = _app(settings)
            options = LoginOptions(
                store_url=admin.describe(),
                api_id=api_id,
                api_hash=api_hash,
                phone=args.phone,
                bot=bool(args.bot or bot_token),
                bot_token=bot_token,
                test_server=test_server,
                test_server_pem=pem,
                timeout=float(args.timeout),
                proxy=None if settings.proxy is None else proxy_for_telethon(settings.proxy),
            )
            me = await log_in_store(admin.store(args.name), options, prompter)
        except BaseException as exc:
            reason = f"login failed: {exc}" if isinstance(exc, CliError) else "login interrupted"
            if not isinstance(exc, (CliError, KeyboardInterrupt, asyncio.CancelledError)):
                reason = f"login failed ({type(exc).__name__})"
            with contextlib.suppress(Exception):
                await admin.set_status(args.name, AccountStatus.PENDING, reason)
            raise
        status = AccountStatus.DISABLED if args.disabled else AccountStatus.ACTIVE
        with admin_errors(admin):
            await admin.set_status(args.name, status)
    print(f"{me}; account {args.name!r} is {status.value} in {admin.describe()}", flush=True)
    return EXIT_OK


async def _prepare(
    admin: FleetAdmin,
    name: str,
    given: AccountSettings | None,
    *,
    replace: bool,
    say: Prompter,
) -> AccountSettings:
    """Write the account as pending (or resume a pending one); its settings for the login."""
    try:
        existing = await admin.account(name)
    except UnknownAccountError:
        existing = None
    reason = "login under way (resilient-tg fleet add)"
    if existing is not None and not replace:
        if existing.status is not AccountStatus.PENDING:
            raise CliError(
                f"{admin.describe()}#{name}: the fleet already has an account {name!r} "
                f"({existing.status.value}); --replace replaces it",
                EXIT_STORE,
            )
        say.say(f"Resuming the login of the pending account {name!r}.")
        if given is not None:
            await admin.set_settings(name, given)
        await admin.set_status(name, AccountStatus.PENDING, reason)
        return given if given is not None else await admin.settings(name)
    settings = given if given is not None else AccountSettings()
    await admin.add(
        name, None, settings=settings, status=AccountStatus.PENDING, reason=reason, replace=replace
    )
    return settings


def _app(settings: AccountSettings) -> tuple[int, str]:
    """The account's own app, or the fleet's from TG_API_ID/TG_API_HASH."""
    if settings.api_id is not None and settings.api_hash is not None:
        return settings.api_id, settings.api_hash
    raw = os.environ.get("TG_API_ID", "").strip()
    api_hash = os.environ.get("TG_API_HASH", "").strip()
    if not raw or not api_hash:
        raise CliError(
            "a login needs the fleet's app in $TG_API_ID and $TG_API_HASH (or the "
            "account's own: --api-id with --api-hash-env/--api-hash-file)",
            EXIT_USAGE,
        )
    try:
        return int(raw), api_hash
    except ValueError:
        raise CliError("$TG_API_ID must be a number", EXIT_USAGE) from None


def _test_server(args: argparse.Namespace) -> tuple[tuple[str, int] | None, str | None]:
    if args.test_server is None:
        if args.test_server_key is not None:
            raise CliError("--test-server-key is only used with --test-server", EXIT_USAGE)
        return None, None
    host, sep, port = args.test_server.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--test-server must be HOST:PORT, got {args.test_server!r}", EXIT_USAGE)
    if args.test_server_key is None:
        raise CliError("--test-server needs --test-server-key PEM_FILE", EXIT_USAGE)
    try:
        pem = Path(args.test_server_key).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise CliError(
            f"cannot read --test-server-key {args.test_server_key}: {why}", EXIT_USAGE
        ) from None
    return (host, int(port)), pem


def _wrap(text: str) -> str:
    """Descriptions are wrapped by hand: the raw formatter keeps the examples' layout."""
    return textwrap.fill(text, width=88)
