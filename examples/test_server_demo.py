"""Offline demo: a raw Telethon client against MTProtoTestServer, through a FaultProxy.

No credentials, no internet. Alice sends Bob messages while the proxy breaks Bob's
link (reset, refusal) and the server restarts; the table shows what Bob received.
This exercises the test server; ResilientClient's own demo (`resilient-tg demo`)
comes with the client.

    python examples/test_server_demo.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter

from telethon import TelegramClient, events

from resilient_tg.testing import FaultProxy, MTProtoTestServer

RECOVERY_LIMIT = 30.0


async def main() -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        async with (
            MTProtoTestServer(data_dir=data_dir) as server,
            FaultProxy(server.host, server.port) as proxy,
        ):
            return await run(server, proxy)


async def run(server: MTProtoTestServer, proxy: FaultProxy) -> int:
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    print(f"MTProto test server on {server.host}:{server.port}, fault proxy on port {proxy.port}")

    session = server.telethon_session()
    session.set_dc(server.dc_id, proxy.host, proxy.port)  # Bob goes through the proxy
    client = TelegramClient(session, server.api_id, server.api_hash, retry_delay=0.5)
    await client.start(phone=bob.phone, code_callback=lambda: server.login_code(bob.phone))
    received: Counter[str] = Counter()
    arrived = asyncio.Event()

    @client.on(events.NewMessage(incoming=True))
    async def on_message(event: events.NewMessage.Event) -> None:
        received[event.raw_text] += 1
        arrived.set()

    sent: list[str] = []
    rows: list[tuple[str, float | None, int, int, int]] = []

    async def send_batch(label: str, n: int = 3) -> None:
        for i in range(n):
            text = f"{label} #{i}"
            await server.send_message(alice.id, bob.id, text)
            sent.append(text)

    async def settle(fault: str, started: float) -> None:
        deadline = time.monotonic() + RECOVERY_LIMIT
        while not all(received[t] for t in sent) and time.monotonic() < deadline:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 1.0)
            except asyncio.TimeoutError:
                # Telethon notices a pts gap only when a later update arrives; ask it.
                await client.catch_up()
        recovered = time.monotonic() - started if all(received[t] for t in sent) else None
        dup = sum(c - 1 for c in received.values() if c > 1)
        rows.append((fault, recovered, len(sent), sum(1 for t in sent if received[t]), dup))
        recovery = f"{recovered:.2f}s" if recovered is not None else "never"
        print(f"  {fault:<24} all delivered after {recovery}")

    await send_batch("baseline")
    await settle("none (baseline)", time.monotonic())

    started = time.monotonic()
    proxy.reset()
    await send_batch("after reset")
    await settle("reset", started)

    started = time.monotonic()
    proxy.refuse(2.0)
    proxy.reset()
    await send_batch("during refusal")
    await settle("refuse 2s", started)

    started = time.monotonic()
    await server.restart()
    await send_batch("after restart")
    await settle("server restart (kept)", started)

    await client.disconnect()
    print()
    print(f"{'fault':<24} {'recovered':>10} {'sent':>5} {'got':>5} {'dup':>4}")
    for fault, recovered, n_sent, n_got, dup in rows:
        shown = f"{recovered:.2f}s" if recovered is not None else "never"
        print(f"{fault:<24} {shown:>10} {n_sent:>5} {n_got:>5} {dup:>4}")
    ok = all(received[t] == 1 for t in sent) and len(received) == len(sent)
    print("\nevery message arrived exactly once" if ok else "\nmessages were lost or duplicated")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
