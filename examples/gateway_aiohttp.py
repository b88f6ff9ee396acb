"""An HTTP gateway in front of a ResilientClient, whose health tells the truth.

    pip install 'resilient-tg[examples]'
    python examples/gateway_aiohttp.py --store file:///var/lib/gw/session.json \
        --api-id 12345 --api-hash 0123abcd...        # or TG_STORE, TG_API_ID, TG_API_HASH
    python examples/gateway_aiohttp.py --test-server   # offline: a local MTProtoTestServer

Endpoints:

- ``GET /health``: ``Health.to_dict()`` as JSON; 200 only while the MTProto link is
  healthy (CONNECTED, authorized, a pong within interval + timeout), 503 otherwise. A
  gateway without a live link has nothing to serve, so it must not say "healthy".
- ``GET /live``: 200 while the process serves and the client can still recover (any
  state but AUTH_LOST, GAVE_UP, CLOSED), else 500: a liveness probe that does not
  restart the process during a Telegram outage, which the client rides out itself.
- ``GET /metrics``: Prometheus text from ``resilient_tg.metrics`` (501 if that module
  or ``prometheus-client`` is missing).
- ``GET /messages``: the last ``--keep`` incoming messages, newest last, as JSON.

The client lives exactly as long as the app: ``make_app(client)`` enters it in an
aiohttp ``cleanup_ctx``, so the server starts serving (503) while Telegram is still
unreachable, and the session is flushed and its lease released on shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from telethon import events

from resilient_tg import KeepalivePolicy, ResilientClient

log = logging.getLogger("gateway")

CLIENT = web.AppKey("client", ResilientClient)
RECENT = web.AppKey("recent", collections.deque)
METRICS = web.AppKey("metrics", object)  # a prometheus CollectorRegistry, or None

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def make_app(client: ResilientClient, *, keep: int = 100) -> web.Application:
    """The gateway for ``client`` (not yet entered: the app enters and leaves it)."""
    app = web.Application()
    app[CLIENT] = client
    app[RECENT] = collections.deque(maxlen=keep)
    app[METRICS] = _instrument(client)  # before entering, so the first transitions count
    app.cleanup_ctx.append(_client_lifetime)
    app.router.add_get("/health", health)
    app.router.add_get("/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/messages", messages)
    return app


def _instrument(client: ResilientClient) -> Any:
    try:
        from prometheus_client import CollectorRegistry

        from resilient_tg.metrics import instrument
    except ImportError as exc:
        log.warning("metrics disabled: %s", exc)
        return None
    registry = CollectorRegistry()
    instrument(client, registry)
    return registry


async def _client_lifetime(app: web.Application) -> AsyncIterator[None]:
    client = app[CLIENT]
    recent = app[RECENT]
    async with client:
        # Handlers go on right after entering, before the first await: the first
        # updates (those fetched by catch-up included) find them.
        @client.telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: Any) -> None:
            recent.append(
                {
                    "chat_id": event.chat_id,
                    "message_id": event.id,
                    "sender_id": event.sender_id,
                    "text": event.raw_text,
                    "date": event.date.isoformat() if event.date else None,
                }
            )

        yield


async def health(request: web.Request) -> web.Response:
    snapshot = request.app[CLIENT].health()
    return web.json_response(snapshot.to_dict(), status=200 if snapshot.healthy else 503)


async def live(request: web.Request) -> web.Response:
    state = request.app[CLIENT].state
    return web.json_response({"state": state.value}, status=500 if state.terminal else 200)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    if registry is None:
        return web.Response(
            status=501,
            text="metrics unavailable: install resilient-tg[metrics] (resilient_tg.metrics)\n",
        )
    from prometheus_client import generate_latest

    return web.Response(body=generate_latest(registry), headers={"Content-Type": PROMETHEUS_TEXT})


async def messages(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[RECENT]))


# Running it -------------------------------------------------------------------------


def status_file(args: argparse.Namespace) -> dict[str, Any]:
    """``status_file=`` for ResilientClient when asked for: a healthcheck reads it with
    ``resilient-tg status --file PATH`` without touching the session."""
    return {"status_file": args.status_file} if args.status_file else {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default=env("TG_STORE"), help="session store URL [TG_STORE]")
    parser.add_argument("--api-id", type=int, default=env("TG_API_ID"), help="[TG_API_ID]")
    parser.add_argument("--api-hash", default=env("TG_API_HASH"), help="[TG_API_HASH]")
    parser.add_argument(
        "--status-file",
        default=env("TG_STATUS_FILE"),
        help="keep the health here for `resilient-tg status --file` [TG_STATUS_FILE]",
    )
    parser.add_argument("--host", default=env("GATEWAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GATEWAY_PORT", "8080")))
    parser.add_argument("--keep", type=int, default=100, help="recent messages kept")
    parser.add_argument(
        "--test-server",
        action="store_true",
        help="run against a local MTProtoTestServer; a second user sends a message every 5 s",
    )
    args = parser.parse_args(argv)
    if not args.test_server and not (args.store and args.api_id and args.api_hash):
        parser.error(
            "--store, --api-id and --api-hash (or TG_*) are required without --test-server"
        )
    return args


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)
    await runner.setup()  # enters the client (cleanup_ctx)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"gateway on http://{host}:{port}/health  /metrics  /messages", flush=True)
        await app[CLIENT].run_until_signal()  # SIGTERM/SIGINT
    finally:
        await runner.cleanup()  # leaves the client: flush, release the lease


async def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("telethon").setLevel(logging.WARNING)
    args = parse_args(argv)
    if not args.test_server:
        client = ResilientClient(args.store, args.api_id, args.api_hash, **status_file(args))
        await serve(make_app(client, keep=args.keep), args.host, args.port)
        return 0

    from resilient_tg.stores import MemoryStore, SessionData
    from resilient_tg.testing import MTProtoTestServer

    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        bob = server.create_user("+15550002", "Bob")
        store = MemoryStore(
            SessionData(
                dc_id=server.dc_id,
                server_address=server.host,
                port=server.port,
                auth_key=server.issue_auth_key(alice.id),  # logged in as Alice
            )
        )
        client = ResilientClient(
            store,
            server.api_id,
            server.api_hash,
            keepalive=KeepalivePolicy(interval=1.0, timeout=1.0),
            **status_file(args),
        )

        async def chatter() -> None:
            n = 0
            while True:
                await asyncio.sleep(5)
                n += 1
                await server.send_message(bob.id, alice.id, f"hello #{n} from Bob")

        task = asyncio.create_task(chatter())
        try:
            await serve(make_app(client, keep=args.keep), args.host, args.port)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
