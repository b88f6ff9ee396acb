"""3. Loss and duplication across random faults.

Three receivers (ours, Telethon with defaults, Telethon with ``connection_retries=None``),
each its own account, behind one proxy. A second user (Bob, server-side) sends each of
them a steady stream of messages; each receiver also sends its own steady stream to
Bob through the faulty link. Meanwhile the proxy and server go through random faults
from the matrix. Counted: messages its handler never saw (lost), saw more than once
(duplicated), and its own sends stored more than once on the server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import tempfile
from pathlib import Path
from typing import Any

import anyio
from telethon import events

from resilient_tg import ConnectionState, KeepalivePolicy, ReconnectPolicy
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from ._common import (
    OURS,
    TELETHON_DEFAULT,
    TELETHON_FOREVER,
    Config,
    Row,
    Scenario,
    bench_server,
    input_peer,
    new_user,
    open_ours,
    open_telethon,
    poll_until,
    wait_for_state,
)

NAME = "delivery"
TITLE = "Loss and duplication across random faults"
GOAL = "ours: 0 lost and 0 duplicated deliveries, 0 duplicated sends"

FAULTS = ("reset", "refuse", "blackhole", "latency", "cut", "restart")
KEEPALIVE = KeepalivePolicy(interval=0.5, timeout=0.5)
RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.5, connect_timeout=3.0)
KINDS = (OURS, TELETHON_DEFAULT, TELETHON_FOREVER)


async def inject(
    kind: str,
    proxy: FaultProxy,
    server: MTProtoTestServer,
    rng: random.Random,
    world_lock: asyncio.Lock,
) -> str:
    """One fault from the matrix, held for a short random while, then healed.

    A restart holds ``world_lock``: a server-side send while the server swaps in its
    reloaded state would be lost by the server, not by a client.
    """
    if kind == "reset":
        proxy.reset()
        return "reset"
    if kind == "refuse":
        seconds = rng.uniform(0.3, 1.5)
        proxy.refuse(seconds)
        proxy.reset()
        await asyncio.sleep(seconds)
        proxy.heal()
        return f"refuse {seconds:.1f}s"
    if kind == "blackhole":
        seconds = rng.uniform(0.5, 2.0)
        proxy.blackhole()
        await asyncio.sleep(seconds)
        proxy.heal()
        return f"blackhole {seconds:.1f}s"
    if kind == "latency":
        seconds = rng.uniform(0.2, 0.8)
        proxy.latency(seconds)
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        proxy.heal()
        return f"latency {seconds:.1f}s"
    if kind == "cut":
        n = rng.randint(1, 300)
        proxy.cut_after(n)
        await asyncio.sleep(0.5)
        proxy.heal()
        return f"cut after {n}B"
    async with world_lock:
        await server.restart()
    return "server restart"


class _Receiver:
    def __init__(self, kind: str, user: Any) -> None:
        self.kind = kind
        self.user = user
        self.received: collections.Counter[str] = collections.Counter()
        self.sent_to: list[str] = []  # Bob -> this receiver
        self.own: list[str] = []  # this receiver -> Bob (attempted)
        self.send_errors: collections.Counter[str] = collections.Counter()

    async def on_message(self, event: Any) -> None:
        self.received[event.raw_text] += 1


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    count = cfg.n(100, 3)
    with tempfile.TemporaryDirectory(prefix="rtg-bench-") as tmp:
        async with (
            bench_server(result, data_dir=Path(tmp)) as server,
            FaultProxy(server.host, server.port) as proxy,
        ):
            data = await _run(server, proxy, rng, count)
    result.raw = data
    for kind in KINDS:
        d = data["per_client"][kind]
        ours = kind == OURS
        for metric, value in (
            ("lost deliveries", d["lost"]),
            ("duplicated deliveries", d["duplicated"]),
            ("duplicated sends (server)", d["duplicated_sends"]),
        ):
            result.rows.append(
                Row(
                    NAME,
                    f"{count} faults",
                    kind,
                    metric,
                    value,
                    goal="0" if ours else "",
                    met=(value == 0) if ours else None,
                )
            )
    for kind in KINDS:
        d = data["per_client"][kind]
        result.notes.append(
            f"{kind}: {d['incoming']} messages sent to it, {d['own_sent']} sends of its own "
            f"({d['own_stored']} stored, {d['send_requests_seen_by_server']} sendMessage "
            f"requests seen by the server, errors: {d['send_errors'] or 'none'})."
        )
    if data["telethon_gave_up"]:
        result.notes.append(
            f"Raw Telethon gave up (client.disconnected set): {data['telethon_gave_up']}."
        )
    return result


async def _run(
    server: MTProtoTestServer, proxy: FaultProxy, rng: random.Random, count: int
) -> dict[str, Any]:
    bob = new_user(server, "Bob")
    receivers = {kind: _Receiver(kind, new_user(server, kind)) for kind in KINDS}
    faults: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        ours, _ = await stack.enter_async_context(
            open_ours(
                server,
                receivers[OURS].user,
                port=proxy.port,
                keepalive=KEEPALIVE,
                reconnect=RECONNECT,
            )
        )
        ours.telegram.add_event_handler(
            receivers[OURS].on_message, events.NewMessage(incoming=True)
        )
        clients: dict[str, Any] = {OURS: ours.telegram}
        for kind, extra in (
            (TELETHON_DEFAULT, {}),
            (TELETHON_FOREVER, {"connection_retries": None}),
        ):
            raw, _ = await stack.enter_async_context(
                open_telethon(server, receivers[kind].user, port=proxy.port, **extra)
            )
            raw.add_event_handler(receivers[kind].on_message, events.NewMessage(incoming=True))
            clients[kind] = raw
        async with anyio.create_task_group() as tg:
            world_lock = asyncio.Lock()
            tg.start_soon(_stream_in, server, bob, receivers, world_lock)
            for kind in KINDS:
                tg.start_soon(_stream_out, clients[kind], receivers[kind], bob)
            await asyncio.sleep(1.0)
            for i in range(count):
                kind = rng.choice(FAULTS)
                faults.append(await inject(kind, proxy, server, rng, world_lock))
                # The next fault comes once ours is back (bounded), plus a random gap.
                await wait_for_state(ours, ConnectionState.CONNECTED, 30.0)
                await asyncio.sleep(rng.uniform(0.2, 1.0) if i < count - 1 else 0.5)
            tg.cancel_scope.cancel()
        proxy.heal()
        await wait_for_state(ours, ConnectionState.CONNECTED, 30.0)
        # Let the stragglers arrive: ours catches up on reconnect; Telethon gets as long.
        await poll_until(
            lambda: all(all(r.received[t] for t in r.sent_to) for r in receivers.values()),
            10.0,
            0.1,
        )
        await asyncio.sleep(1.0)
        gave_up = [
            kind
            for kind in (TELETHON_DEFAULT, TELETHON_FOREVER)
            if clients[kind].disconnected.done()
        ]
    stored = collections.Counter(
        (m.peer_id, m.text) for m in server._world.accounts[bob.id].box if not m.out
    )
    requests = collections.Counter(r.user_id for r in server.requests_for("messages.sendMessage"))
    per_client: dict[str, Any] = {}
    for kind, r in receivers.items():
        texts = r.sent_to
        own_stored = [stored[(r.user.id, t)] for t in r.own]
        per_client[kind] = {
            "incoming": len(texts),
            "lost": sum(1 for t in texts if not r.received[t]),
            "duplicated": sum(max(0, r.received[t] - 1) for t in texts),
            "own_sent": len(r.own),
            "own_stored": sum(1 for n in own_stored if n),
            "own_not_stored": sum(1 for n in own_stored if not n),
            "duplicated_sends": sum(max(0, n - 1) for n in own_stored),
            "send_requests_seen_by_server": requests[r.user.id],
            "send_errors": dict(r.send_errors),
        }
    return {"faults": faults, "per_client": per_client, "telethon_gave_up": gave_up}


async def _stream_in(
    server: MTProtoTestServer, bob: Any, receivers: dict[str, _Receiver], world_lock: asyncio.Lock
) -> None:
    """Bob sends every receiver a message every 100 ms (server-side: never faulted)."""
    n = 0
    while True:
        n += 1
        async with world_lock:
            for r in receivers.values():
                text = f"in {n}"
                r.sent_to.append(text)
                await server.send_message(bob.id, r.user.id, text)
        await asyncio.sleep(0.1)


async def _stream_out(client: Any, receiver: _Receiver, bob: Any) -> None:
    """The receiver sends Bob a message every 200 ms through the faulty link."""
    peer = input_peer(bob)
    n = 0
    while True:
        n += 1
        text = f"out {receiver.kind} {n}"
        receiver.own.append(text)
        try:
            await asyncio.wait_for(client.send_message(peer, text), 15.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted; the stream goes on
            receiver.send_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)


def plot(scenario: Scenario, fig: Any) -> None:
    per = scenario.raw["per_client"]
    ax = fig.add_subplot(1, 1, 1)
    metrics = (
        ("lost", "lost deliveries"),
        ("duplicated", "duplicated deliveries"),
        ("duplicated_sends", "duplicated sends"),
    )
    width = 0.25
    for i, (key, label) in enumerate(metrics):
        xs = [j + (i - 1) * width for j in range(len(KINDS))]
        ax.bar(xs, [per[k][key] for k in KINDS], width, label=label)
    ax.set_xticks(range(len(KINDS)), [k.replace(" (", "\n(") for k in KINDS])
    ax.set_ylabel("messages")
    ax.set_title(f"{len(scenario.raw['faults'])} random faults: what the handlers saw")
    ax.legend()
