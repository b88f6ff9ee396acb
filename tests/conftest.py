"""Shared test helpers: Telethon clients pointed at the test server, logged in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from telethon import TelegramClient
from telethon.network import ConnectionTcpFull
from telethon.sessions import MemorySession

from resilient_tg.testing import MTProtoTestServer, TestBot, TestUser

pytest_plugins = ["tests.exclusive"]

# Bounds every network step of a test; a hang fails the test instead of blocking CI.
STEP_TIMEOUT = 20.0


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Telethon is asyncio-only."""
    return "asyncio"


async def wait_until(predicate: Callable[[], bool], limit: float = STEP_TIMEOUT) -> None:
    """Wait for a condition that no event announces (checked every 10 ms, bounded)."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - the condition lives in another component
            await anyio.sleep(0.01)


def session_for(server: MTProtoTestServer, port: int | None = None) -> MemorySession:
    session = MemorySession()
    session.set_dc(server.dc_id, server.host, port or server.port)
    return session


@contextlib.asynccontextmanager
async def telethon_client(
    server: MTProtoTestServer,
    *,
    session: MemorySession | None = None,
    port: int | None = None,
    connection: type = ConnectionTcpFull,
    **kwargs: Any,
) -> AsyncIterator[TelegramClient]:
    """A connected raw Telethon client; FloodWait is raised, not slept through."""
    kwargs.setdefault("flood_sleep_threshold", 0)
    kwargs.setdefault("request_retries", 1)
    kwargs.setdefault("retry_delay", 0.1)
    client = TelegramClient(
        session or session_for(server, port),
        server.api_id,
        server.api_hash,
        connection=connection,
        **kwargs,
    )
    await asyncio.wait_for(client.connect(), STEP_TIMEOUT)
    try:
        yield client
    finally:
        await asyncio.wait_for(client.disconnect(), STEP_TIMEOUT)


async def login(client: TelegramClient, server: MTProtoTestServer, user: TestUser | TestBot) -> Any:
    """Log in with a login code (users) or a token (bots); returns the User."""
    if isinstance(user, TestBot):
        return await asyncio.wait_for(client.sign_in(bot_token=user.token), STEP_TIMEOUT)
    await asyncio.wait_for(client.send_code_request(user.phone), STEP_TIMEOUT)
    return await asyncio.wait_for(
        client.sign_in(user.phone, server.login_code(user.phone)), STEP_TIMEOUT
    )


def take_disconnect_error(client: Any) -> None:
    """Telethon also puts a failed connect()'s error (a -404...) into the disconnected
    future connect() made: take it there, or the loop reports it as never retrieved when
    the future is collected, and anyio's test runner fails whichever test runs then."""
    client.disconnected.add_done_callback(lambda ended: ended.cancelled() or ended.exception())
