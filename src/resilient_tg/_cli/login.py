"""``resilient-tg login``: log in interactively and keep the session in any store.

The login runs on a ResilientClient over the target store, so the store's lease is
held while it works and the auth key is durable before the command says it is done.
Prompts read lines from standard input when it is not a terminal (scripts and tests
pipe the answers in); secrets (bot token, 2FA password) are never echoed or printed.
Asking is `._prompt`; the sign-in steps are `._signin`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
from telethon import errors

from .._client import ResilientClient
from .._errors import AppRejectedError, AuthLostError, NotConnectedError, ResultUnknownError
from .._fatal import app_rejected
from .._policy import ReconnectPolicy
from ..stores import SessionData, SessionStore, default_holder
from ._common import (
    EXIT_AUTH,
    EXIT_CODES_HELP,
    EXIT_NETWORK,
    EXIT_REJECTED,
    EXIT_STORE,
    EXIT_USAGE,
    CliError,
)
from ._prompt import Prompter
from ._signin import bot_sign_in, user_sign_in, who
from .session import check_writable, open_store_arg, store_errors

__all__ = ["LoginOptions", "Prompter", "log_in_store", "login", "register"]

log = logging.getLogger("resilient_tg.cli")

# Telegram's production DC 2, where Telethon starts too.
PRODUCTION_DC = SessionData(dc_id=2, server_address="149.154.167.51", port=443)
TEST_SERVER_DC_ID = 2
LEASE_TTL = 30.0

_EXAMPLES = """examples:
  export TG_API_ID=12345 TG_API_HASH=...   # from my.telegram.org
  resilient-tg login file:///var/lib/mybot/session.json --phone +15550001
  resilient-tg login 'sqlite:////data/sessions.db?name=bot' --bot
  resilient-tg login file:///tmp/s.json --test-server 127.0.0.1:40123 \\
      --test-server-key /tmp/rtg/server_key.pub.pem --phone +15550001

Answers are read from standard input when it is not a terminal, one per line (phone,
code, password or bot token), so a script can pipe them in."""


def register(subparsers: Any) -> None:
    """Add the ``login`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "login",
        help="log in (phone + code + 2FA, or bot token) and save the session in a store",
        description=_wrap(
            "Log in to Telegram (or to a standalone test server) and save the session in "
            "STORE_URL (file:///path, sqlite:///path?name=N, postgresql://..., ...). The "
            "store's lease is held while the login runs; a store in use by a live process "
            "is refused. A store that already holds a logged-in session is left as it is."
        ),
        epilog=f"{_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", metavar="STORE_URL", help="where to keep the session")
    parser.add_argument(
        "--api-id", type=int, default=None, help="your app's api_id (default: $TG_API_ID)"
    )
    parser.add_argument(
        "--api-hash",
        default=None,
        help="your app's api_hash (default: $TG_API_HASH; prefer the variable, since "
        "command lines are visible to other users)",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--phone", help="the account's phone number (asked for if missing)")
    who.add_argument(
        "--bot-token", help="log in as a bot with this token (visible in ps; see --bot)"
    )
    who.add_argument("--bot", action="store_true", help="log in as a bot; ask for the token")
    parser.add_argument(
        "--test-server",
        metavar="HOST:PORT",
        help="log in against a standalone test server (`resilient-tg test-server`)",
    )
    parser.add_argument(
        "--test-server-key",
        metavar="PEM_FILE",
        help="the test server's public key (printed by `resilient-tg test-server`)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting after this long, exit 5 (default: 30)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log connection steps to stderr"
    )
    parser.set_defaults(run=run)


@attrs.frozen
class LoginOptions:
    """The validated arguments of one login."""

    store_url: str
    api_id: int
    api_hash: str = attrs.field(repr=False)
    phone: str | None
    bot: bool
    bot_token: str | None = attrs.field(repr=False)
    test_server: tuple[str, int] | None
    test_server_pem: str | None = attrs.field(repr=False)
    timeout: float
    # Telethon's proxy= dict (it may hold a password); None: connect directly.
    proxy: dict[str, Any] | None = attrs.field(default=None, repr=False)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``resilient-tg login``."""
    options = _options(args)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
        )
    else:
        # Our warnings (a failed save...) matter; Telethon's chatter about the link
        # closing at shutdown does not: the command reports failures itself.
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
        logging.getLogger("telethon").setLevel(logging.ERROR)
    return asyncio.run(login(options, Prompter()))


def _options(args: argparse.Namespace) -> LoginOptions:
    api_id = args.api_id
    if api_id is None:
        raw = os.environ.get("TG_API_ID", "").strip()
        if not raw:
            raise CliError("needs --api-id or $TG_API_ID (from my.telegram.org)", EXIT_USAGE)
        try:
            api_id = int(raw)
        except ValueError:
            raise CliError("$TG_API_ID must be a number", EXIT_USAGE) from None
    api_hash = args.api_hash or os.environ.get("TG_API_HASH", "").strip()
    if not api_hash:
        raise CliError("needs --api-hash or $TG_API_HASH (from my.telegram.org)", EXIT_USAGE)
    if not args.timeout > 0:
        raise CliError("--timeout must be > 0 seconds", EXIT_USAGE)
    test_server = None
    pem = None
    if args.test_server is not None:
        test_server = _host_port(args.test_server)
        if args.test_server_key is None:
            raise CliError(
                "--test-server needs --test-server-key PEM_FILE (the key file "
                "`resilient-tg test-server` prints)",
                EXIT_USAGE,
            )
        try:
            with open(args.test_server_key, encoding="ascii") as f:
                pem = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(
                f"cannot read --test-server-key {args.test_server_key}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}",
                EXIT_USAGE,
            ) from None
    elif args.test_server_key is not None:
        raise CliError("--test-server-key is only used with --test-server", EXIT_USAGE)
    return LoginOptions(
        store_url=args.store,
        api_id=api_id,
        api_hash=api_hash,
        phone=args.phone,
        bot=bool(args.bot or args.bot_token),
        bot_token=args.bot_token,
        test_server=test_server,
        test_server_pem=pem,
        timeout=float(args.timeout),
    )


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--test-server must be HOST:PORT, got {value!r}", EXIT_USAGE)
    return host, int(port)


# The login ------------------------------------------------------------------------------


async def login(options: LoginOptions, prompter: Prompter) -> int:
    """Log in into ``options.store_url``; returns the exit code or raises CliError."""
    store = open_store_arg(options.store_url)
    check_writable(store)
    try:
        me = await log_in_store(store, options, prompter)
    finally:
        with contextlib.suppress(Exception):
            await store.aclose()
    print(f"{me}; the session is in {store.describe()}", flush=True)
    return 0


async def log_in_store(store: SessionStore, options: LoginOptions, prompter: Prompter) -> str:
    """Log in into ``store`` (its lease held meanwhile; ``options.store_url`` is not
    used); returns who is logged in, or raises CliError. Shared with ``fleet add``."""
    if options.test_server_pem is not None:
        from ..testing import trust_test_server

        try:
            trust_test_server(options.test_server_pem)
        except ValueError as exc:
            raise CliError(f"--test-server-key: {exc}", EXIT_USAGE) from None
    holder = f"resilient-tg-login@{default_holder()}"
    with _login_errors(store, options):
        with store_errors(store):
            # At once, instead of ResilientClient's waiting: a login must not queue
            # behind a live process that uses the session.
            await store.acquire_lease(holder, LEASE_TTL)
        try:
            with store_errors(store):
                await _seed(store, options)
            me = await _log_in_with_client(store, holder, options, prompter)
        finally:
            with contextlib.suppress(Exception):
                await store.release_lease(holder)
        with store_errors(store):
            saved = await store.load()
        if saved is None or saved.auth_key is None:
            raise CliError(
                f"{store.describe()}: the session could not be saved (see the log above)",
                EXIT_STORE,
            )
    return me


async def _seed(store: SessionStore, options: LoginOptions) -> None:
    """Point an empty store at the server to log in to (ResilientClient then makes the key)."""
    data = await store.load()
    if options.test_server is None:
        if data is None:
            await store.save(PRODUCTION_DC)
        return
    host, port = options.test_server
    if data is not None and (data.server_address, data.port) == (host, port):
        return
    if data is not None and data.dc_id != TEST_SERVER_DC_ID and data.server_address == host:
        return  # a login moved it to another DC of this server (*_MIGRATE_X)
    if data is not None and data.auth_key is not None:
        raise CliError(
            f"{store.describe()} holds a session for {data.server_address}:{data.port}, "
            f"not for the test server at {host}:{port}; log in into another store",
            EXIT_STORE,
        )
    await store.save(SessionData(dc_id=TEST_SERVER_DC_ID, server_address=host, port=port))


async def _log_in_with_client(
    store: SessionStore, holder: str, options: LoginOptions, prompter: Prompter
) -> str:
    """Connect, then log in unless the session already is; a never-authorized key left by
    a login that did not finish is discarded once the server has said it does not accept
    it (a login interrupted after the server accepted it left a logged-in key)."""
    with store_errors(store):
        stored = await store.load()
    stale = (
        stored.auth_key
        if stored is not None and stored.auth_key is not None and not stored.ever_authorized
        else None
    )
    while True:
        async with _login_client(store, holder, options) as client:
            telegram = client.telegram
            if client.health().authorized:
                me = await telegram.get_me()
                return f"already logged in as {who(me)}; nothing changed"
            if stale is not None:
                with store_errors(store):
                    current = await store.load()
                if current is None or current.auth_key != stale:
                    # The server no longer knew the key (-404): the client made a new one.
                    _say_discarded(prompter, store)
                    stale = None
            if stale is None:
                if options.bot:
                    user = await bot_sign_in(telegram, options.bot_token, prompter)
                else:
                    user = await user_sign_in(telegram, options.phone, prompter)
                return f"logged in as {who(user)}"
        # The server answered 401 for the never-authorized key: start over with a new one.
        _say_discarded(prompter, store)
        with store_errors(store):
            await _drop_key(store, holder, stale)
        stale = None


@contextlib.asynccontextmanager
async def _login_client(
    store: SessionStore, holder: str, options: LoginOptions
) -> AsyncIterator[ResilientClient]:
    """A ResilientClient on ``store``, entered and CONNECTED (authorized or not)."""
    client = ResilientClient(
        store,
        options.api_id,
        options.api_hash,
        holder=holder,
        lease_ttl=LEASE_TTL,
        reconnect=ReconnectPolicy(
            initial_delay=0.2, max_delay=2.0, connect_timeout=min(10.0, options.timeout)
        ),
        request_timeout=options.timeout,
        **_proxy_kwargs(options),
    )
    async with client:
        try:
            await client.wait_connected(options.timeout)
        except TimeoutError:
            data = await store.load()
            where = f"{data.server_address}:{data.port}" if data is not None else "Telegram"
            last = client.health().last_error
            raise CliError(
                f"could not connect to {where} within {options.timeout:g}s"
                + (f" (last error: {last})" if last else ""),
                EXIT_NETWORK,
            ) from None
        yield client


def _proxy_kwargs(options: LoginOptions) -> dict[str, Any]:
    """Telethon's ``proxy=`` when the account has one (``fleet add --proxy-...``)."""
    return {} if options.proxy is None else {"proxy": options.proxy}


def _say_discarded(prompter: Prompter, store: SessionStore) -> None:
    prompter.say(
        f"Discarded the never-authorized auth key in {store.describe()} (left by a login "
        "that did not finish; the server does not accept it); logging in with a new key."
    )


async def _drop_key(store: SessionStore, holder: str, key: bytes) -> None:
    """Remove ``key`` from the stored session (under the lease), keeping its server."""
    await store.acquire_lease(holder, LEASE_TTL)  # the client released it when it left
    data = await store.load()
    if data is not None and data.auth_key == key and not data.ever_authorized:
        await store.save(attrs.evolve(data, auth_key=None))


@contextlib.contextmanager
def _login_errors(store: SessionStore, options: LoginOptions) -> Iterator[None]:
    """Map what the client and Telethon raise to one-line errors with exit codes."""
    try:
        with store_errors(store):
            yield
    except CliError:
        raise
    except AuthLostError as exc:
        raise CliError(
            f"the server no longer accepts the logged-in key in {store.describe()} "
            f"({exc.reason or exc}): it was revoked or logged out elsewhere; log in into a "
            "new store, or remove this session first (`session export` keeps a copy)",
            EXIT_AUTH,
        ) from None
    except AppRejectedError as exc:
        raise CliError(_refused(exc.reason), EXIT_REJECTED) from None
    except (NotConnectedError, ResultUnknownError) as exc:
        raise CliError(f"lost the connection: {exc}", EXIT_NETWORK) from None
    except errors.FloodWaitError as exc:
        raise CliError(
            f"Telegram asks to wait {exc.seconds}s before trying again", EXIT_AUTH
        ) from None
    except errors.PhoneNumberInvalidError:
        raise CliError("the phone number is not valid", EXIT_AUTH) from None
    except errors.RPCError as exc:
        name = app_rejected(exc)  # a wrong api_hash is found out at auth.sendCode
        if name is not None:
            raise CliError(_refused(name), EXIT_REJECTED) from None
        # Telethon's message names the error and the request class, never its fields.
        raise CliError(f"login failed: {exc}", EXIT_AUTH) from None


def _refused(name: str) -> str:
    return (
        f"the server refuses this api_id/api_hash ({name}); check --api-id and --api-hash "
        "(or TG_API_ID/TG_API_HASH) against my.telegram.org"
    )


def _wrap(text: str) -> str:
    """Descriptions are wrapped by hand: the raw formatter keeps the examples' layout."""
    return textwrap.fill(text, width=88)
