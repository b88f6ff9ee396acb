"""The memory scenario's child process: N connected idle clients of one kind; see
benchmarks/memory.py. Prints one JSON line: memory before and after, idle CPU."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession

from resilient_tg import ResilientClient
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import trust_test_server

from ._child import cpu_seconds, emit
from ._common import OURS, quiet_logs, rss_bytes


def _settle() -> None:
    gc.collect()
    gc.collect()


async def _child(spec_path: str) -> None:
    spec = json.loads(await asyncio.to_thread(Path(spec_path).read_text))
    trust_test_server(spec["pem"])
    keys = [bytes.fromhex(k) for k in spec["keys"]]
    traced = spec["mode"] == "tracemalloc"
    async with contextlib.AsyncExitStack() as stack:
        # One client first, not counted: what the first client of a process imports and
        # builds once (Telethon's and our lazily imported modules, the scheduler) is not
        # a per-client cost. Both sides get the same warm-up.
        await _open(spec, stack, keys[:1])
        keys = keys[1:]
        _settle()
        rss0 = rss_bytes()
        if traced:
            tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0] if traced else 0
        started = time.monotonic()
        await _open(spec, stack, keys)
        connected = time.monotonic() - started
        await asyncio.sleep(
            spec["settle_seconds"]
        )  # post-connect work (catch-up, first flush) is done
        _settle()
        rss1 = rss_bytes()
        traced1 = tracemalloc.get_traced_memory()[0] if traced else 0
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(spec["idle_seconds"])
        idle_cpu = (cpu_seconds() - cpu0) / (time.monotonic() - t0)
        emit(
            {
                "n": len(keys),
                "connect_all_seconds": round(connected, 2),
                "rss_before": rss0,
                "rss_after": rss1,
                "traced_bytes": traced1 - traced0 if traced else None,
                "idle_seconds": spec["idle_seconds"],
                "idle_cpu_share": idle_cpu,
                "tasks": len(asyncio.all_tasks()),
            }
        )
        if traced:
            tracemalloc.stop()


async def _open(spec: dict[str, Any], stack: contextlib.AsyncExitStack, keys: list[bytes]) -> None:
    """Connect a client per key (ours: CONNECTED; Telethon: connect() returned)."""
    if spec["kind"] == OURS:
        clients: list[Any] = []
        for key in keys:
            store = MemoryStore(
                SessionData(
                    dc_id=spec["dc_id"],
                    server_address=spec["host"],
                    port=spec["port"],
                    auth_key=key,
                )
            )
            client = ResilientClient(store, spec["api_id"], spec["api_hash"])
            clients.append(await stack.enter_async_context(client))
        await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 900)
        return
    gate = asyncio.Semaphore(50)

    async def connect(key: bytes) -> None:
        session = MemorySession()
        session.set_dc(spec["dc_id"], spec["host"], spec["port"])
        session.auth_key = AuthKey(key)
        raw = TelegramClient(session, spec["api_id"], spec["api_hash"], catch_up=True)
        async with gate:
            await raw.connect()
        stack.push_async_callback(_disconnect, raw)

    await asyncio.wait_for(asyncio.gather(*(connect(k) for k in keys)), 900)


async def _disconnect(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 10)


if __name__ == "__main__":
    with quiet_logs():
        asyncio.run(_child(sys.argv[1]))
