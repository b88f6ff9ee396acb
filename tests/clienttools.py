"""Helpers for ResilientClient tests: fast policies, seeded stores, recorders."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from telethon import events

from resilient_tg import (
    ConnectionState,
    KeepalivePolicy,
    ReconnectPolicy,
    ResilientClient,
    StateChange,
    _compat,
)
from resilient_tg.stores import MemoryStore, SessionData, SessionStore
from resilient_tg.testing import MTProtoTestServer, TestUser

from .conftest import STEP_TIMEOUT

# Scaled down so that the fault matrix runs in seconds; the arithmetic is the same.
FAST_KEEPALIVE = KeepalivePolicy(interval=0.5, timeout=0.5)
FAST_RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.3, connect_timeout=3.0)


def seeded_store(
    server: MTProtoTestServer, port: int | None = None, *, user: TestUser | None = None
) -> MemoryStore:
    """A store pointing at the server (or a proxy port) with a key the server issued."""
    key = server.issue_auth_key(user.id if user is not None else None)
    return MemoryStore(
        SessionData(
            dc_id=server.dc_id, server_address=server.host, port=port or server.port, auth_key=key
        )
    )


def empty_store(server: MTProtoTestServer, port: int | None = None) -> MemoryStore:
    """A store pointing at the server with no key: the client creates one (DH exchange)."""
    return MemoryStore(
        SessionData(dc_id=server.dc_id, server_address=server.host, port=port or server.port)
    )


class Recorder:
    """Collects state changes and incoming messages, and lets a test await them."""

    def __init__(self, client: ResilientClient) -> None:
        self.client = client
        self.changes: list[StateChange] = []
        self.messages: collections.Counter[str] = collections.Counter()
        self.message_order: list[str] = []
        self._changed = asyncio.Event()
        client.on_state_change(self._on_change)

    def _on_change(self, change: StateChange) -> None:
        self.changes.append(change)
        self._changed.set()

    def watch_messages(self) -> None:
        @self.client.telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: Any) -> None:
            self.messages[event.raw_text] += 1
            self.message_order.append(event.raw_text)
            self._changed.set()

    async def until(self, predicate: Any, limit: float = STEP_TIMEOUT) -> None:
        with anyio.fail_after(limit):
            while not predicate():
                self._changed.clear()
                with anyio.move_on_after(0.05):
                    await self._changed.wait()

    async def state(self, state: ConnectionState, limit: float = STEP_TIMEOUT) -> None:
        await self.until(lambda: self.client.state is state, limit)

    async def left(self, state: ConnectionState, limit: float = STEP_TIMEOUT) -> float:
        """Wait until the client leaves ``state``; returns when (monotonic)."""
        await self.until(lambda: self.client.state is not state, limit)
        return time.monotonic()

    def states(self) -> list[ConnectionState]:
        return [c.new for c in self.changes]

    async def all_messages(self, texts: list[str], limit: float = STEP_TIMEOUT) -> None:
        try:
            await self.until(lambda: all(self.messages[t] >= 1 for t in texts), limit)
        except TimeoutError:
            missing = [t for t in texts if self.messages[t] < 1]
            raise AssertionError(
                f"{len(missing)} of {len(texts)} messages not received within {limit}s: "
                f"{missing}; received in order: {self.message_order}; "
                f"client {self.client.state.value}, box pts "
                f"{_compat.box_pts(self.client.telegram, None)}"
            ) from None


@contextlib.asynccontextmanager
async def running(
    store: SessionStore,
    server: MTProtoTestServer,
    **kwargs: Any,
) -> AsyncIterator[tuple[ResilientClient, Recorder]]:
    kwargs.setdefault("keepalive", FAST_KEEPALIVE)
    kwargs.setdefault("reconnect", FAST_RECONNECT)
    kwargs.setdefault("shutdown_timeout", 5.0)
    client = ResilientClient(store, server.api_id, server.api_hash, **kwargs)
    recorder = Recorder(client)
    async with client:
        yield client, recorder


async def log_in(client: ResilientClient, server: MTProtoTestServer, user: TestUser) -> None:
    telegram = client.telegram
    await telegram.send_code_request(user.phone)
    await telegram.sign_in(user.phone, server.login_code(user.phone))
