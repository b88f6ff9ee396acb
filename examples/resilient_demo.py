"""ResilientClient surviving faults, offline: no credentials, no internet.

Starts a local MTProto test server and a fault proxy, runs a ResilientClient on a
FileStore in a temporary directory, has a second user send it messages, and breaks
the network on the way: reset, refused connects, a black hole, a server restart.
Prints how fast each fault was found and repaired, and exits 0 only if every message
arrived exactly once.

    python examples/resilient_demo.py
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import tempfile
import time
from pathlib import Path

from telethon import events

from resilient_tg import (
    KeepalivePolicy,
    ReconnectPolicy,
    ResilientClient,
    StateChange,
)
from resilient_tg.stores import FileStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

KEEPALIVE = KeepalivePolicy(interval=1.0, timeout=1.0)  # dead links found within 2 s
RECONNECT = ReconnectPolicy(initial_delay=0.2, max_delay=2.0, connect_timeout=5.0)


async def main() -> int:
    # resilient_tg logs one INFO line per transition; Telethon's own chatter is muted.
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("resilient_tg.client").setLevel(logging.INFO)
    logging.getLogger("telethon").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            MTProtoTestServer(data_dir=Path(tmp) / "server") as server,
            FaultProxy(server.host, server.port) as proxy,
        ):
            return await demo(server, proxy, Path(tmp) / "alice.session")


async def demo(server: MTProtoTestServer, proxy: FaultProxy, path: Path) -> int:
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    # Point the new session at the test server, through the proxy.
    await FileStore(path).save(
        SessionData(dc_id=server.dc_id, server_address=proxy.host, port=proxy.port)
    )
    received: collections.Counter[str] = collections.Counter()
    sent: list[str] = []
    rows: list[tuple[str, float | None, float | None]] = []

    client = ResilientClient(
        FileStore(path), server.api_id, server.api_hash, keepalive=KEEPALIVE, reconnect=RECONNECT
    )
    losses: list[float] = []

    @client.on_disconnected
    def on_disconnected(change: StateChange) -> None:
        losses.append(time.monotonic())

    async with client:
        telegram = client.telegram

        @telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: events.NewMessage.Event) -> None:
            received[event.raw_text] += 1

        await client.wait_connected(20)
        await telegram.send_code_request(alice.phone)
        await telegram.sign_in(alice.phone, server.login_code(alice.phone))
        print(f"logged in as Alice; session in {path}")

        async def send(label: str, n: int = 3) -> None:
            for i in range(n):
                text = f"{label} #{i}"
                await server.send_message(bob.id, alice.id, text)
                sent.append(text)

        async def all_arrived() -> None:
            while not all(received[t] for t in sent):  # noqa: ASYNC110 - a demo polls
                await asyncio.sleep(0.02)

        async def lost_since(start: float) -> float:
            while not any(t >= start for t in losses):  # noqa: ASYNC110 - a demo polls
                await asyncio.sleep(0.01)
            return next(t for t in losses if t >= start) - start

        async def run_fault(name: str, start: float) -> None:
            detect = await asyncio.wait_for(lost_since(start), 30)
            await asyncio.wait_for(client.wait_connected(), 30)
            await send(f"after {name}")
            await asyncio.wait_for(all_arrived(), 30)
            rows.append((name, detect, time.monotonic() - start))
            print(
                f"  {name}: found in {detect:.2f}s, service back after "
                f"{time.monotonic() - start:.2f}s"
            )

        await send("before faults")
        await asyncio.wait_for(all_arrived(), 30)

        start = time.monotonic()
        proxy.reset()
        await run_fault("reset", start)

        start = time.monotonic()
        proxy.refuse(3.0)
        proxy.reset()
        await send("during refusal")
        await run_fault("refused 3s", start)

        start = time.monotonic()
        proxy.blackhole()
        await send("into the black hole")
        await asyncio.wait_for(lost_since(start), 30)  # the keepalive finds it
        proxy.heal()
        await run_fault("black hole", start)

        start = time.monotonic()
        await server.restart()
        await run_fault("server restart", start)

    # A new process would do exactly this: resume from the file, no login.
    await send("while stopped")
    async with ResilientClient(
        FileStore(path), server.api_id, server.api_hash, keepalive=KEEPALIVE, reconnect=RECONNECT
    ) as again:

        @again.telegram.on(events.NewMessage(incoming=True))
        async def on_message_again(event: events.NewMessage.Event) -> None:
            received[event.raw_text] += 1

        await again.wait_connected(20)
        assert again.health().authorized, "the restarted client had to log in again"
        await asyncio.wait_for(all_arrived(), 30)
        rows.append(("process restart", None, None))

    print()
    print(f"{'fault':<18} {'detected':>9} {'recovered':>10}")
    for name, detect, recover in rows:
        d = f"{detect:.2f}s" if detect is not None else "-"
        r = f"{recover:.2f}s" if recover is not None else "resumed"
        print(f"{name:<18} {d:>9} {r:>10}")
    duplicated = sum(c - 1 for c in received.values() if c > 1)
    lost = sum(1 for t in sent if not received[t])
    print(
        f"\nmessages sent {len(sent)}, received {sum(received.values())}, "
        f"lost {lost}, duplicated {duplicated}"
    )
    ok = lost == 0 and duplicated == 0
    print("every message arrived exactly once" if ok else "MESSAGES WERE LOST OR DUPLICATED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
