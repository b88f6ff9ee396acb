"""The fleet's child process: N clients of one kind; see benchmarks/fleet.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession

from resilient_tg import ResilientClient
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import trust_test_server

from ._child import cpu_seconds, emit
from ._common import OURS, LinkLog, quiet_logs
from ._probe import Probe


async def _child(spec_path: str) -> None:
    spec = json.loads(await asyncio.to_thread(Path(spec_path).read_text))
    trust_test_server(spec["pem"])
    keys = [bytes.fromhex(k) for k in spec["keys"]]
    n = len(keys)
    attempts = LinkLog()  # one log for the fleet: attempts of every client
    rng = random.Random(f"{spec['seed']}:fleet")
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        calls: list[Any] = []
        if spec["kind"] == OURS:
            clients = []
            for key in keys:
                client = ResilientClient(
                    MemoryStore(
                        SessionData(
                            dc_id=spec["dc_id"],
                            server_address=spec["host"],
                            port=spec["port"],
                            auth_key=key,
                        )
                    ),
                    spec["api_id"],
                    spec["api_hash"],
                    shutdown_timeout=10.0,
                    rng=rng,
                    connection=attempts.connection_class(),
                )
                clients.append(await stack.enter_async_context(client))
            await asyncio.wait_for(asyncio.gather(*(c.wait_connected() for c in clients)), 600)
            calls = [c.telegram for c in clients]
        else:
            gate = asyncio.Semaphore(50)

            async def connect(key: bytes) -> Any:
                session = MemorySession()
                session.set_dc(spec["dc_id"], spec["host"], spec["port"])
                session.auth_key = AuthKey(key)
                log = LinkLog(fleet=attempts)
                raw = TelegramClient(
                    session, spec["api_id"], spec["api_hash"], connection=log.connection_class()
                )
                async with gate:
                    await raw.connect()
                stack.push_async_callback(_disconnect, raw)
                return raw

            calls = await asyncio.wait_for(asyncio.gather(*(connect(k) for k in keys)), 600)
        emit({"connect_all_seconds": round(time.monotonic() - started, 2)})
        t0 = float(await asyncio.to_thread(sys.stdin.readline))  # the server has restarted
        cpu0 = cpu_seconds()
        probes = [Probe(call) for call in calls]
        first_ok: list[float | None] = [None] * n

        async def until_ok(i: int) -> None:
            probe = probes[i]
            probe.start()
            try:
                await probe.answered.wait()  # started after t0: every answer is later
                first_ok[i] = round(probe.successes[0] - t0, 4)
            finally:
                await probe.stop()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(until_ok(i) for i in range(n))), spec["comeback_limit"]
            )
        emit(
            {
                "attempts": [round(a - t0, 4) for a in attempts.attempts if a >= t0],
                "first_ok": first_ok,
                "cpu_seconds": round(cpu_seconds() - cpu0, 2),
            }
        )


async def _disconnect(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 10)


if __name__ == "__main__":
    with quiet_logs():
        asyncio.run(_child(sys.argv[1]))
