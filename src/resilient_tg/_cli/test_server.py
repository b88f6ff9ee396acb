"""``resilient-tg test-server``: run MTProtoTestServer standalone, for trying a client,
the CLI or a whole service offline.

It prints where it listens, the app credentials it accepts, its public key (as a PEM
file a client must trust), the accounts it knows (bot tokens included: nothing here is
real), and exactly how to point a client at it. Login codes are printed as the server
"sends" them, like Telegram delivering them to the app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import anyio

from ._common import EXIT_CODES_HELP, EXIT_NETWORK, EXIT_OK, EXIT_STORE, EXIT_USAGE, CliError

__all__ = ["register"]

PEM_FILE = "server_key.pub.pem"

_EXAMPLES = """examples:
  resilient-tg test-server --user +15550001:Alice --user +15550002:Bob:secret2fa --bot echo_bot
  resilient-tg test-server --port 40123 --data-dir /tmp/tg-state --json
  resilient-tg test-server --dcs 5 --home-dc 4 --user +15550001:Alice

--user PHONE:NAME[:PASSWORD] creates an account (PASSWORD turns on 2FA for it); with
--data-dir, accounts, auth keys and messages survive restarts and existing ones are kept.
--dcs N serves DCs 1..N, each on its own port (--port is DC 2's); accounts made by
--user and --bot live on --home-dc, and logins that start elsewhere are sent there
with PHONE_MIGRATE_X / USER_MIGRATE_X, as on Telegram.
With --json, the connection info is one JSON line and each login code another:
  {"event": "listening", "host": ..., "port": ..., ...}
  {"event": "login_code", "phone": "+15550001", "code": "12345"}"""


def register(subparsers: Any) -> None:
    """Add the ``test-server`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "test-server",
        help="run a local MTProto test server and print how to point a client at it",
        description=_wrap(
            "Run resilient_tg.testing.MTProtoTestServer until SIGINT or SIGTERM: a "
            "local server that speaks real MTProto 2.0 to an unmodified Telethon client. "
            "Nothing it knows is real; it prints its credentials and tokens on purpose."
        ),
        epilog=f"{_EXAMPLES}\n\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="keep state (and the server key) here across runs"
    )
    parser.add_argument(
        "--dcs",
        type=int,
        default=1,
        metavar="N",
        help="serve DCs 1..N, one port each (default 1: DC 2 only)",
    )
    parser.add_argument(
        "--home-dc",
        type=int,
        metavar="DC",
        help="the DC --user and --bot accounts live on (default 2)",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="PHONE:NAME[:PASSWORD]",
        help="create an account (repeatable); PASSWORD sets a 2FA password",
    )
    parser.add_argument(
        "--bot", action="append", default=[], metavar="USERNAME", help="create a bot"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the connection info as one JSON line"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the server's work to stderr"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``resilient-tg test-server``."""
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be in 0..65535, got {args.port}", EXIT_USAGE)
    served = range(1, args.dcs + 1) if args.dcs > 1 else range(2, 3)
    if not 1 <= args.dcs <= 1000:
        raise CliError(f"--dcs must be in 1..1000, got {args.dcs}", EXIT_USAGE)
    if args.home_dc is not None and args.home_dc not in served:
        raise CliError(
            f"--home-dc {args.home_dc} is not a DC this server serves "
            f"({served.start}..{served.stop - 1})",
            EXIT_USAGE,
        )
    users = [_parse_user(spec) for spec in args.user]
    bots = [name.lstrip("@") for name in args.bot]
    if any(not name for name in bots):
        raise CliError("--bot needs a username", EXIT_USAGE)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
        )
    return asyncio.run(_serve(args, users, bots))


def _parse_user(spec: str) -> tuple[str, str, str | None]:
    phone, _, rest = spec.partition(":")
    name, _, password = rest.partition(":")
    digits = "".join(ch for ch in phone if ch.isdigit())
    if not 5 <= len(digits) <= 15 or not name.strip():
        raise CliError(
            f"--user must be PHONE:NAME[:PASSWORD] with a 5-15 digit phone, got {spec!r}",
            EXIT_USAGE,
        )
    return "+" + digits, name.strip(), password or None


class _Output:
    """stdout, one flushed line at a time (a script reads it through a pipe)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def event(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}), flush=True)

    def login_code(self, phone: str, code: str) -> None:
        if self.as_json:
            self.event("login_code", phone=phone, code=code)
        else:
            self.line(f"login code for {phone}: {code}")


async def _serve(
    args: argparse.Namespace, users: list[tuple[str, str, str | None]], bots: list[str]
) -> int:
    from ..testing import MTProtoTestServer

    out = _Output(args.json)
    temp_dir = None
    if args.data_dir:
        key_dir = Path(args.data_dir)
    else:
        temp_dir = key_dir = Path(tempfile.mkdtemp(prefix="resilient-tg-test-server-"))
    try:
        server = MTProtoTestServer(
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            dcs=args.dcs,
            on_login_code=lambda phone, code: out.login_code("+" + phone, code),
        )
        try:
            await server.__aenter__()
        except OSError as exc:
            raise CliError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_NETWORK
            ) from None
        except ValueError as exc:  # an unreadable data_dir state file
            raise CliError(str(exc), EXIT_STORE) from None
        try:
            _populate(server, users, bots, args.home_dc)
            pem_path = key_dir / PEM_FILE
            try:
                pem_path.write_text(server.public_key_pem, encoding="ascii")
                os.chmod(pem_path, 0o644)  # a public key
            except OSError as exc:  # the data dir cannot be written: as for any store
                raise CliError(
                    f"cannot write {pem_path}: {exc.strerror or exc}", EXIT_STORE
                ) from None
            # Handlers first: a script may signal as soon as it has read the info.
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                _announce(out, server, pem_path, data_dir=args.data_dir)
                async for _ in signals:
                    break
        finally:
            await server.__aexit__(None, None, None)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    print("test server stopped", file=sys.stderr, flush=True)
    return EXIT_OK


def _populate(
    server: Any,
    users: list[tuple[str, str, str | None]],
    bots: list[str],
    home_dc: int | None,
) -> None:
    """Create what the command line asks for; with --data-dir, keep what exists."""
    world = server._world  # the same package: the CLI shows every account it knows
    for phone, name, password in users:
        account = world.by_phone(phone)
        if account is None:
            account = server.create_user(phone, name, dc_id=home_dc)
        user_id = account.id
        if password is not None:
            server.set_password(user_id, password)
    for username in bots:
        if world.by_username(username) is None:
            try:
                server.create_bot(username, dc_id=home_dc)
            except ValueError as exc:
                raise CliError(f"--bot {username}: {exc}", EXIT_USAGE) from None


def _accounts(server: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    users, bots = [], []
    for account in server._world.accounts.values():
        if account.bot:
            bots.append(
                {
                    "id": account.id,
                    "username": account.username,
                    "token": account.token,
                    "dc_id": account.dc_id,
                }
            )
        else:
            users.append(
                {
                    "id": account.id,
                    "phone": "+" + account.phone if account.phone else None,
                    "first_name": account.first_name,
                    "username": account.username,
                    "has_password": account.password is not None,
                    "dc_id": account.dc_id,
                }
            )
    return users, bots


def _login_command(server: Any, pem_path: Path, phone: str | None) -> str:
    who = f"--phone {shlex.quote(phone)}" if phone else "--bot"
    return (
        f"TG_API_ID={server.api_id} TG_API_HASH={server.api_hash} resilient-tg login "
        f"file:///tmp/resilient-tg-session.json --test-server {server.host}:{server.port} "
        f"--test-server-key {shlex.quote(str(pem_path))} {who}"
    )


def _python_snippet(server: Any, pem_path: Path) -> list[str]:
    return [
        "from resilient_tg import ResilientClient",
        "from resilient_tg.stores import MemoryStore, SessionData",
        "from resilient_tg.testing import trust_test_server",
        f"trust_test_server(open({str(pem_path)!r}).read())",
        f"client = ResilientClient(MemoryStore(SessionData(dc_id={server.dc_id}, "
        f"server_address={server.host!r}, port={server.port})), "
        f"{server.api_id}, {server.api_hash!r})",
    ]


def _announce(out: _Output, server: Any, pem_path: Path, *, data_dir: str | None) -> None:
    users, bots = _accounts(server)
    first_phone = users[0]["phone"] if users else None
    command = _login_command(server, pem_path, first_phone)
    snippet = _python_snippet(server, pem_path)
    if out.as_json:
        out.event(
            "listening",
            host=server.host,
            port=server.port,
            dc_id=server.dc_id,
            dcs=[
                {"id": dc, "host": host, "port": port}
                for dc in server.dc_ids
                for host, port in [server.dc_address(dc)]
            ],
            api_id=server.api_id,
            api_hash=server.api_hash,
            public_key_file=str(pem_path),
            data_dir=data_dir,
            users=users,
            bots=bots,
            login_command=command,
            python="\n".join(snippet),
        )
        return
    out.line(f"MTProto test server listening on {server.host}:{server.port} (dc {server.dc_id})")
    others = [dc for dc in server.dc_ids if dc != server.dc_id]
    if others:
        where = ", ".join("dc {} on {}:{}".format(dc, *server.dc_address(dc)) for dc in others)
        out.line(f"  other DCs   {where}")
    out.line(f"  api_id      {server.api_id}")
    out.line(f"  api_hash    {server.api_hash}")
    out.line(f"  public key  {pem_path}")
    out.line(f"  data dir    {data_dir or '(none: everything is forgotten when it stops)'}")
    for user in users:
        flag = "  (2FA password set)" if user["has_password"] else ""
        home = f"  dc {user['dc_id']}" if others else ""
        out.line(f"  user  {user['phone']}  {user['first_name']}  id {user['id']}{home}{flag}")
    for bot in bots:
        home = f"  dc {bot['dc_id']}" if others else ""
        out.line(f"  bot   @{bot['username']}  id {bot['id']}{home}  token {bot['token']}")
    out.line()
    out.line("Log in with the CLI (the login code is printed below when it is sent):")
    out.line(f"  {command}")
    out.line()
    out.line("Or from Python (then: async with client: await client.wait_connected()):")
    for line in snippet:
        out.line(f"  {line}")
    out.line()
    out.line("Login codes appear below as they are sent. Ctrl-C or SIGTERM stops the server.")


def _wrap(text: str) -> str:
    """Descriptions are wrapped by hand: the raw formatter keeps the examples' layout."""
    return textwrap.fill(text, width=88)
