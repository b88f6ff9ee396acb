"""The keepalive task: a ping_delay_disconnect every ``interval``; no pong within
``timeout`` means the link is dead, and its socket is aborted so it is rebuilt.

A black-holed (half-open) link therefore costs at most interval + timeout: the ping
that finds it is sent at most ``interval`` after the last pong, and its pong is
awaited for ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from telethon.tl import functions

from . import _compat
from ._state import StateReason

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["run_keepalive"]

log = logging.getLogger("resilient_tg.keepalive")


async def run_keepalive(client: ResilientClient) -> None:
    # Pings that outlived their timeout are left to finish (or to be cancelled by a full
    # disconnect): cancelling one would make Telethon 1.45 fail on its late pong
    # (_handle_pong sets a result on a cancelled future and reconnects).
    lingering: set[asyncio.Task[object]] = set()
    try:
        await _ping_forever(client, lingering)
    finally:
        for task in lingering:
            task.cancel()
        if lingering:
            # Owned to the end: wait for the cancelled pings so none outlives the client.
            with anyio.CancelScope(shield=True):
                await asyncio.wait(set(lingering), timeout=1.0)


async def _ping_forever(client: ResilientClient, lingering: set[asyncio.Task[object]]) -> None:
    policy = client.keepalive_policy
    established = client._carrying
    telegram = client._telegram
    assert telegram is not None
    last_pong = time.monotonic()
    while True:
        if not established.is_set():
            await established.wait()
            last_pong = time.monotonic()  # the link was just proven by the probe
        generation = client._generation
        sent = time.monotonic()
        ping = functions.PingDelayDisconnectRequest(
            ping_id=secrets.randbits(63), disconnect_delay=policy.disconnect_delay
        )
        task: asyncio.Task[object] = asyncio.ensure_future(_compat.send_raw(telegram, ping))
        done, _ = await asyncio.wait({task}, timeout=policy.timeout)
        if not done:
            _compat.withdraw(telegram, ping)  # never resent; its task ends (cancelled) now
            lingering.add(task)
            task.add_done_callback(_forget(lingering))
            if generation == client._generation and established.is_set():
                silence = time.monotonic() - last_pong
                client.abort_link(
                    StateReason.KEEPALIVE_TIMEOUT, f"keepalive timeout after {silence:.1f}s"
                )
            continue
        if task.cancelled() or task.exception() is not None:
            # The link changed under the ping (or the server refused it); start over.
            log.debug("keepalive ping failed: %r", None if task.cancelled() else task.exception())
            await asyncio.sleep(min(policy.interval, 0.1))
            continue
        now = time.monotonic()
        if generation == client._generation:
            last_pong = now
            client._record_pong(now - sent)
        await asyncio.sleep(max(0.0, sent + policy.interval - now))


def _forget(tasks: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure of a stale ping is not news

    return done
