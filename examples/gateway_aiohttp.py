"""An HTTP gateway in front of a ResilientClient, whose health tells the truth.

    pip install 'resilient-tg[examples]'
    python examples/gateway_aiohttp.py --store file:///var/lib/gw/session.json \
        --api-id 12345 --api-hash 0123abcd...        # or TG_STORE, TG_API_ID, TG_API_HASH
    python examples/gateway_aiohttp.py --test-server   # offline: a local MTProtoTestServer
    python examples/gateway_aiohttp.py --test-server --cache redis://127.0.0.1:6379/0

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
- ``GET /chats/{id}/messages?limit=N&offset_id=M``: the chat's newest ``N`` (1-100,
  default 20) messages below id ``M`` (0: the newest), newest first, as a JSON list of
  ``{id, date, text, out, edit_date, sender_id}`` (dates ISO 8601, ``edit_date`` null
  when never edited), read through a ``resilient_tg.cache.MessageCache``: from the
  cache when it can prove the range complete, else from Telegram (then stored, so the
  next read is a hit). ``{id}`` is a marked peer id (a user's id; ``-100...`` for a
  channel; ``-N`` for a basic group). Headers: ``X-Resilient-Source: cache`` or
  ``telegram``; ``X-Resilient-As-Of`` (Unix time the answer was last known current);
  while the link is down the cache answers anyway with ``X-Resilient-Stale: 1`` (and
  ``X-Resilient-Complete: 0`` when it cannot prove it holds the whole range), unless
  ``?fresh=1`` asks for current data only: then 503. 400 for bad parameters, 404 for
  a chat the account does not know, 502 when Telegram refuses the read.

The cache's backend is ``--cache URL`` [GATEWAY_CACHE]: ``memory`` (the default: this
process only, empty after a restart), ``redis://...`` (the ``redis`` extra; keys under
``--cache-prefix``) or an SQL URL as for SQLStore (``sqlite:///path``,
``postgresql://user@host/db``, ``mariadb://...``; the ``sql``, ``postgres`` or
``mysql`` extra; a pool of at most 3 connections), which several gateways of one
account can share.

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
from telethon.errors import RPCError

from resilient_tg import KeepalivePolicy, ResilientClient
from resilient_tg.cache import (
    CacheAnswer,
    CacheBackend,
    MemoryCacheBackend,
    MessageCache,
    StaleCacheError,
)

log = logging.getLogger("gateway")

CLIENT = web.AppKey("client", ResilientClient)
CACHE = web.AppKey("cache", MessageCache)
RECENT = web.AppKey("recent", collections.deque)
METRICS = web.AppKey("metrics", object)  # a prometheus CollectorRegistry, or None

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def make_app(
    client: ResilientClient, *, keep: int = 100, cache: CacheBackend | None = None
) -> web.Application:
    """The gateway for ``client`` (not yet entered: the app enters and leaves it).

    Its MessageCache keeps its messages in ``cache`` (default: a MemoryCacheBackend);
    the caller closes that backend after the app is done. A client that already has a
    MessageCache (``client.cache``) keeps it.
    """
    app = web.Application()
    app[CLIENT] = client
    # Before the client is entered: entering starts the cache, which must see every update.
    app[CACHE] = client.cache or MessageCache(client, cache or MemoryCacheBackend())
    app[RECENT] = collections.deque(maxlen=keep)
    app[METRICS] = _instrument(client)  # before entering, so the first transitions count
    app.cleanup_ctx.append(_client_lifetime)
    app.router.add_get("/health", health)
    app.router.add_get("/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/messages", messages)
    app.router.add_get("/chats/{id}/messages", chat_messages)
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


async def chat_messages(request: web.Request) -> web.Response:
    try:
        chat_id = int(request.match_info["id"])
        limit = int(request.query.get("limit", "20"))
        offset_id = int(request.query.get("offset_id", "0"))
    except ValueError:
        return _error(400, "id, limit and offset_id must be integers")
    if not 1 <= limit <= 100 or offset_id < 0:
        return _error(400, "limit must be 1-100 and offset_id 0 or a message id")
    fresh = request.query.get("fresh", "").lower() in ("1", "true", "yes")
    try:
        answer = await request.app[CACHE].history(
            chat_id, limit=limit, offset_id=offset_id, fresh=fresh
        )
    except StaleCacheError as exc:  # fresh=1 while the link is down
        return _error(503, str(exc), state=exc.state, as_of=exc.as_of)
    except ValueError as exc:  # Telethon knows no such peer (nor does the cache)
        return _error(404, f"unknown chat {chat_id}: {exc}")
    except RPCError as exc:  # e.g. CHANNEL_PRIVATE, PEER_ID_INVALID
        return _error(502, f"Telegram refused the read: {exc.message}")
    body = [_message_json(m) for m in answer.value]
    return web.json_response(body, headers=source_headers(answer))


def source_headers(answer: CacheAnswer[Any]) -> dict[str, str]:
    """Where an answer came from and how fresh it is, as response headers."""
    headers = {
        "X-Resilient-Source": answer.source.value,
        "X-Resilient-As-Of": f"{answer.as_of:.3f}",
    }
    if answer.stale:
        headers["X-Resilient-Stale"] = "1"
        if not answer.complete:
            headers["X-Resilient-Complete"] = "0"
    return headers


def _message_json(message: Any) -> dict[str, Any]:
    edit_date = getattr(message, "edit_date", None)
    return {
        "id": message.id,
        "date": message.date.isoformat() if message.date else None,
        "text": getattr(message, "message", None) or "",  # a service message has none
        "out": bool(message.out),
        "edit_date": edit_date.isoformat() if edit_date else None,
        "sender_id": message.sender_id,
    }


def _error(status: int, text: str, **more: Any) -> web.Response:
    return web.json_response({"error": text, **more}, status=status)


# Running it -------------------------------------------------------------------------


def cache_backend(url: str, *, prefix: str = "gateway:cache") -> CacheBackend:
    """The MessageCache backend for ``--cache``: ``memory``, ``redis://...`` (keys under
    ``prefix``) or an SQL URL (``sqlite:///...``, ``postgresql://...``, ``mariadb://...``)."""
    if url == "memory":
        return MemoryCacheBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from resilient_tg.cache import RedisCacheBackend

        return RedisCacheBackend(url, prefix=prefix)
    from resilient_tg.cache import SQLCacheBackend

    return SQLCacheBackend(url, pool_size=2, max_overflow=1)  # a gateway reads one by one


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
        "--cache",
        default=env("GATEWAY_CACHE", "memory"),
        help="MessageCache backend: memory, redis://... or an SQL URL [GATEWAY_CACHE]",
    )
    parser.add_argument(
        "--cache-prefix",
        default=env("GATEWAY_CACHE_PREFIX", "gateway:cache"),
        help="Redis key prefix of the cache [GATEWAY_CACHE_PREFIX]",
    )
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
        paths = "/health  /metrics  /messages  /chats/{id}/messages"
        print(f"gateway on http://{host}:{port}{paths}", flush=True)
        await app[CLIENT].run_until_signal()  # SIGTERM/SIGINT
    finally:
        await runner.cleanup()  # leaves the client: flush, release the lease


async def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("telethon").setLevel(logging.WARNING)
    args = parse_args(argv)
    backend = cache_backend(args.cache, prefix=args.cache_prefix)
    try:
        await _main(args, backend)
    finally:
        await backend.aclose()  # the backend's pool or connections (memory: nothing)
    return 0


async def _main(args: argparse.Namespace, backend: CacheBackend) -> None:
    if not args.test_server:
        client = ResilientClient(args.store, args.api_id, args.api_hash, **status_file(args))
        await serve(make_app(client, keep=args.keep, cache=backend), args.host, args.port)
        return

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

        print(f"Bob's chat with Alice: /chats/{bob.id}/messages", flush=True)
        task = asyncio.create_task(chatter())
        try:
            await serve(make_app(client, keep=args.keep, cache=backend), args.host, args.port)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
