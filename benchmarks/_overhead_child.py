"""The overhead scenario's child process: both clients, timed; see benchmarks/overhead.py.

``python -m benchmarks._overhead_child SPEC.json`` prints one JSON line: the samples
(seconds) per operation and client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession
from telethon.tl import types

from resilient_tg import ResilientClient
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import trust_test_server

from ._common import OURS, TELETHON_DEFAULT, quiet_logs

KINDS = (OURS, TELETHON_DEFAULT)


async def _child(spec_path: str) -> None:
    spec = json.loads(await asyncio.to_thread(Path(spec_path).read_text))
    trust_test_server(spec["pem"])
    n, block = spec["n"], spec["block"]
    peer = types.InputPeerUser(spec["peer"][0], spec["peer"][1])
    samples: dict[str, dict[str, list[float]]] = {
        op: {k: [] for k in KINDS} for op in ("get_me", "send_message")
    }
    async with contextlib.AsyncExitStack() as stack:
        store = MemoryStore(
            SessionData(
                dc_id=spec["dc_id"],
                server_address=spec["host"],
                port=spec["port"],
                auth_key=bytes.fromhex(spec["keys"][OURS]),
            )
        )
        ours = await stack.enter_async_context(
            ResilientClient(store, spec["api_id"], spec["api_hash"], shutdown_timeout=5.0)
        )
        await ours.wait_connected(60)
        session = MemorySession()
        session.set_dc(spec["dc_id"], spec["host"], spec["port"])
        session.auth_key = AuthKey(bytes.fromhex(spec["keys"][TELETHON_DEFAULT]))
        raw = TelegramClient(session, spec["api_id"], spec["api_hash"])
        await asyncio.wait_for(raw.connect(), 60)
        stack.push_async_callback(raw.disconnect)
        clients = {OURS: ours.telegram, TELETHON_DEFAULT: raw}

        async def get_me(client: Any, i: int) -> None:
            await client.get_me()

        async def send(client: Any, i: int) -> None:
            await client.send_message(peer, f"overhead {i}")

        for op, call in (("get_me", get_me), ("send_message", send)):
            for client in clients.values():  # warm up: first calls resolve and cache
                for i in range(10):
                    await call(client, -i)
            for start in range(0, n, block):
                order = KINDS if (start // block) % 2 == 0 else KINDS[::-1]
                for kind in order:
                    for i in range(start, min(n, start + block)):
                        t = time.perf_counter()
                        await call(clients[kind], i)
                        samples[op][kind].append(time.perf_counter() - t)
    sys.stdout.write(json.dumps(samples) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    with quiet_logs():
        asyncio.run(_child(sys.argv[1]))
