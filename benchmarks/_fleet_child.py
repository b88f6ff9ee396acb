"""The fleet's child process: N clients of one kind; see benchmarks/fleet.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession

from resilient_tg import ConnectionState, ReconnectPolicy, ResilientClient
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import trust_test_server

from ._common import TELETHON_DEFAULT, LinkLog, OursWatch, quiet_logs, rss_bytes
from .fleet import COMEBACK_LIMIT, cpu_seconds


async def _child(spec_path: str) -> None:
    spec = json.loads(await asyncio.to_thread(Path(spec_path).read_text))
    trust_test_server(spec["pem"])
    keys = [bytes.fromhex(k) for k in spec["keys"]]
    n = len(keys)
    kind = spec["kind"]
    ours_kind = kind != TELETHON_DEFAULT
    policy = (
        ReconnectPolicy(initial_delay=spec["initial_delay"])
        if spec.get("initial_delay") is not None
        else ReconnectPolicy()
    )
    attempts = LinkLog()  # one log for the fleet: attempts of every client
    logs: list[LinkLog] = []
    # One seeded generator for the fleet: a Random per client would add its 2.5 KB of
    # state to "memory per client", which ResilientClient itself no longer spends.
    rng = random.Random(f"{spec['seed']}:fleet")
    gc.collect()
    rss_before = rss_bytes()
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        ours: list[Any] = []
        raws: list[Any] = []
        for key in keys:
            if ours_kind:
                store = MemoryStore(
                    SessionData(
                        dc_id=spec["dc_id"],
                        server_address=spec["host"],
                        port=spec["port"],
                        auth_key=key,
                    )
                )
                client = ResilientClient(
                    store,
                    spec["api_id"],
                    spec["api_hash"],
                    shutdown_timeout=10.0,
                    reconnect=policy,
                    rng=rng,
                    connection=attempts.connection_class(),
                )
                ours.append(await stack.enter_async_context(client))
            else:
                session = MemorySession()
                session.set_dc(spec["dc_id"], spec["host"], spec["port"])
                session.auth_key = AuthKey(key)
                log = LinkLog(fleet=attempts)
                logs.append(log)
                raws.append(
                    TelegramClient(
                        session,
                        spec["api_id"],
                        spec["api_hash"],
                        connection=log.connection_class(),
                    )
                )
        if ours_kind:
            await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in ours)), 600)
        else:
            gate = asyncio.Semaphore(50)

            async def connect(client: Any) -> None:
                async with gate:
                    await client.connect()

            await asyncio.wait_for(asyncio.gather(*(connect(c) for c in raws)), 600)
            for client in raws:
                stack.push_async_callback(_disconnect, client)
        connect_all = time.monotonic() - started
        await asyncio.sleep(1.0)
        gc.collect()
        rss_after = rss_bytes()
        _emit(
            {
                "rss_before": rss_before,
                "rss_after": rss_after,
                "connect_all_seconds": round(connect_all, 2),
            }
        )
        watches = [OursWatch(c) for c in ours]  # after the reading: not the client's memory
        t0 = float(await asyncio.to_thread(sys.stdin.readline))
        cpu0 = cpu_seconds()
        back: list[float | None] = [None] * n
        deadline = time.monotonic() + COMEBACK_LIMIT
        while time.monotonic() < deadline and not all(b is not None for b in back):
            now = time.monotonic()
            for i in range(n):
                if back[i] is not None:
                    continue
                if ours_kind:
                    at = watches[i].first(t0, lambda c: c.new is ConnectionState.CONNECTED)
                    if at is not None:
                        back[i] = at - t0
                else:
                    up = logs[i].first_after(logs[i].ups, t0)
                    if up is not None:
                        back[i] = up - t0
            await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - now)))
        _emit(
            {
                "attempts": [a - t0 for a in attempts.attempts if a >= t0],
                "back": back,
                "cpu_seconds": round(cpu_seconds() - cpu0, 2),
            }
        )


async def _disconnect(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 10)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    with quiet_logs():
        asyncio.run(_child(sys.argv[1]))
