"""A cached client killed with SIGKILL mid-stream resumes without serving stale data."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from resilient_tg.cache import SQLCacheBackend
from resilient_tg.stores import FileStore, SessionData
from resilient_tg.testing import MTProtoTestServer

from .cachetools import ChatWorld, assert_cache_equals_server, cached_client
from .test_client_process import ROOT, Worker

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("cache_worker.py")


@pytest.fixture
async def server() -> AsyncIterator[MTProtoTestServer]:
    async with MTProtoTestServer() as server:
        yield server


async def test_a_killed_cached_client_restarts_without_serving_stale_data(
    server: MTProtoTestServer, tmp_path: Path
) -> None:
    """The worker anchors spans and writes a stream of changes until it is killed -9;
    more changes (a deletion of a cached message among them) happen while it is dead.
    The next start, on the same session and cache, answers every chat equal to the
    server's history, whether from the cache or from Telegram."""
    w = ChatWorld(server)
    session = tmp_path / "alice.session"
    key = server.issue_auth_key(w.alice.id)
    await FileStore(session).save(
        SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port, auth_key=key)
    )
    cache_url = f"sqlite:///{tmp_path}/cache.db"
    handles = {chat: [await w.send(chat, f"before {chat}")] for chat in w.chats()}
    cfg = {
        "pem": server.public_key_pem,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
        "session": str(session),
        "cache_url": cache_url,
        "chats": w.chats(),
    }
    env = {**os.environ, "WORKER_CONFIG": json.dumps(cfg), "PYTHONPATH": str(ROOT / "src")}
    async with anyio.create_task_group() as tg:
        process = await anyio.open_process(
            [sys.executable, str(WORKER)], env=env, stderr=None, stdout=-1
        )
        worker = Worker(process)
        tg.start_soon(worker.pump)
        await worker.wait_for("READY")
        for i in range(10):
            for chat in w.chats():
                handles[chat].append(await w.send(chat, f"live {i} {chat}"))
            if i % 3 == 2:
                await w.edit(handles[w.room_id][-2], f"edited {i}")
        await worker.until(lambda: len(worker.messages()) >= 12)  # mid-stream
        process.send_signal(signal.SIGKILL)
        await process.wait()
        tg.cancel_scope.cancel()
    for chat in w.chats():
        await w.delete(handles[chat].pop(0))  # cached by the worker, deleted while dead
        await w.edit(handles[chat][-1], f"edited while dead {chat}")
        await w.send(chat, f"while dead {chat}")
    backend = SQLCacheBackend(cache_url)
    async with cached_client(FileStore(session), server, backend) as (client, _rec, _cache):
        await client.wait_connected(15)
        await w.caught_up(client)
        await assert_cache_equals_server(client, w.chats(), from_cache=False)
        await assert_cache_equals_server(client, w.chats())  # and then from the cache
