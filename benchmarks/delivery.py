"""3. Loss and duplication across random faults.

Three receivers (ours, Telethon with defaults, Telethon with ``connection_retries=None``),
each its own account, behind one proxy. A second user (Bob, server-side) sends each of
them a steady stream of messages; each receiver also sends its own steady stream to
Bob through the faulty link. Meanwhile the proxy and server go through random faults
from the matrix. Counted: messages its handler never saw (lost), saw more than once
(duplicated), and its own sends stored more than once on the server.

A steady stream hides a client that does not catch up after a reconnect: the next
message reveals the pts gap and the client fetches the difference. The second case,
"quiet after fault", takes the stream away: fresh receivers behind a fresh proxy; each
round cuts every link (a refusal after a reset, or a black hole), Bob sends each
receiver ``PER_ROUND`` messages while its link is down, the proxy heals, and nothing
else happens for a quiet window. Counted: messages not in the handler by the end of the
window; and, after one last message from Bob that reveals any gap and a settle wait,
messages never delivered or delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import tempfile
import time
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
    LinkLog,
    OursWatch,
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
from ._delivery_plot import plot

__all__ = ["plot", "run"]

NAME = "delivery"
TITLE = "Loss and duplication across random faults"
GOAL = (
    "ours: 0 lost and 0 duplicated deliveries, 0 duplicated sends; after a quiet fault, "
    "everything delivered within the quiet window"
)

FAULTS = ("reset", "refuse", "blackhole", "latency", "cut", "restart")
KEEPALIVE = KeepalivePolicy(interval=0.5, timeout=0.5)
RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.5, connect_timeout=3.0)
KINDS = (OURS, TELETHON_DEFAULT, TELETHON_FOREVER)

QUIET_FAULTS = ("refuse", "blackhole")
PER_ROUND = 3  # messages Bob sends each receiver while its link is down
SETTLE = 10.0  # after the revealing message: the longest anyone gets to fetch a gap


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
        self.first_seen: dict[str, float] = {}  # text -> monotonic time of 1st delivery
        self.sent_to: list[str] = []  # Bob -> this receiver
        self.own: list[str] = []  # this receiver -> Bob (attempted)
        self.send_errors: collections.Counter[str] = collections.Counter()

    async def on_message(self, event: Any) -> None:
        self.received[event.raw_text] += 1
        self.first_seen.setdefault(event.raw_text, time.monotonic())

    def on_time(self, texts: list[str], deadline: float) -> int:
        """How many of ``texts`` reached the handler by ``deadline`` (monotonic)."""
        return sum(1 for t in texts if self.first_seen.get(t, math.inf) <= deadline)


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    count = cfg.n(100, 3)
    rounds, window = cfg.n(20, 3), (2.0 if cfg.quick else 5.0)
    with tempfile.TemporaryDirectory(prefix="rtg-bench-") as tmp:
        async with bench_server(result, data_dir=Path(tmp)) as server:
            async with FaultProxy(server.host, server.port) as proxy:
                data = await _run(server, proxy, rng, count)
            async with FaultProxy(server.host, server.port) as proxy:
                # its own generator: adding this case changed none of the storm's draws
                quiet = await _quiet(server, proxy, cfg.rng(f"{NAME}:quiet"), rounds, window)
            # Imported here: the supergroup case builds on this module's helpers.
            from ._supergroup import run_supergroup, supergroup_rows

            supergroup = await run_supergroup(
                server, cfg.rng(f"{NAME}:supergroup"), cfg.n(50, 2), cfg.n(10, 2), window
            )
    result.raw = data
    result.raw["quiet"] = quiet
    result.raw["supergroup"] = supergroup
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
    _quiet_rows(result, quiet)
    supergroup_rows(result, supergroup)
    return result


async def _open_receivers(
    stack: contextlib.AsyncExitStack,
    server: MTProtoTestServer,
    proxy: FaultProxy,
    receivers: dict[str, _Receiver],
) -> tuple[Any, OursWatch, dict[str, Any], dict[str, LinkLog]]:
    """One client of each kind behind ``proxy``, its handler counting into its receiver.
    Returns ours, its watch, the Telethon clients by kind and the raw ones' link logs."""
    ours, watch = await stack.enter_async_context(
        open_ours(
            server,
            receivers[OURS].user,
            port=proxy.port,
            keepalive=KEEPALIVE,
            reconnect=RECONNECT,
        )
    )
    ours.telegram.add_event_handler(receivers[OURS].on_message, events.NewMessage(incoming=True))
    clients: dict[str, Any] = {OURS: ours.telegram}
    links: dict[str, LinkLog] = {}
    for kind, extra in (
        (TELETHON_DEFAULT, {}),
        (TELETHON_FOREVER, {"connection_retries": None}),
    ):
        raw, links[kind] = await stack.enter_async_context(
            open_telethon(server, receivers[kind].user, port=proxy.port, **extra)
        )
        raw.add_event_handler(receivers[kind].on_message, events.NewMessage(incoming=True))
        clients[kind] = raw
    return ours, watch, clients, links


async def _run(
    server: MTProtoTestServer, proxy: FaultProxy, rng: random.Random, count: int
) -> dict[str, Any]:
    bob = new_user(server, "Bob")
    receivers = {kind: _Receiver(kind, new_user(server, kind)) for kind in KINDS}
    faults: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        ours, _, clients, _ = await _open_receivers(stack, server, proxy, receivers)
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


# Quiet after fault ---------------------------------------------------------------------


async def _quiet(
    server: MTProtoTestServer, proxy: FaultProxy, rng: random.Random, rounds: int, window: float
) -> dict[str, Any]:
    """The "quiet after fault" case: ``rounds`` cuts, each followed by silence."""
    bob = new_user(server, "Bob")
    receivers = {kind: _Receiver(kind, new_user(server, kind)) for kind in KINDS}
    log: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        ours, watch, clients, links = await _open_receivers(stack, server, proxy, receivers)
        for n in range(rounds):
            await _all_up(ours, links, log[-1]["heal"] if log else 0.0)
            log.append(
                await _quiet_round(n, server, proxy, rng, bob, receivers, watch, links, window)
            )
        await _all_up(ours, links, log[-1]["heal"] if log else 0.0)
        reveal = time.monotonic()
        for r in receivers.values():  # any message would do: its pts shows the gap
            r.sent_to.append("quiet reveal")
            await server.send_message(bob.id, r.user.id, "quiet reveal")
        await poll_until(
            lambda: all(all(r.received[t] for t in r.sent_to) for r in receivers.values()),
            SETTLE,
            0.1,
        )
        await asyncio.sleep(1.0)  # late duplicates
        gave_up = [k for k in links if clients[k].disconnected.done()]
    return {
        "rounds": rounds,
        "per_round": PER_ROUND,
        "window": window,
        "settle": SETTLE,
        "round_log": [_round_raw(entry) for entry in log],
        "per_client": {k: _quiet_counts(r, log, reveal) for k, r in receivers.items()},
        "telethon_gave_up": gave_up,
    }


async def _all_up(ours: Any, links: dict[str, LinkLog], since: float) -> None:
    """Bounded: ours CONNECTED and every raw Telethon link up again after ``since``."""
    await wait_for_state(ours, ConnectionState.CONNECTED, 30.0)
    for log in links.values():
        await log.wait(lambda log=log: bool(log.first_after(log.ups, since)), 10.0)


async def _cut(kind: str, proxy: FaultProxy, ours: Any, links: dict[str, LinkLog]) -> float:
    """Break every link; returns once each client is known to be off it (bounded).

    Ours: its state has left CONNECTED. Raw Telethon after a reset: its sender has begun
    a reconnect (the connection's disconnect() ran); in a black hole it notices nothing
    for 60-120 s, but no byte reaches it, which is what matters here.
    """
    fault = time.monotonic()
    if kind == "refuse":
        proxy.refuse(math.inf)  # until heal()
        proxy.reset()
    else:
        proxy.blackhole()
    await poll_until(lambda: ours.state is not ConnectionState.CONNECTED, 10.0, 0.01)
    if kind == "refuse":
        for log in links.values():
            await log.wait(lambda log=log: bool(log.first_after(log.downs, fault)), 5.0)
    return fault


async def _quiet_round(
    n: int,
    server: MTProtoTestServer,
    proxy: FaultProxy,
    rng: random.Random,
    bob: Any,
    receivers: dict[str, _Receiver],
    watch: OursWatch,
    links: dict[str, LinkLog],
    window: float,
) -> dict[str, Any]:
    """Cut, Bob sends while every link is down, heal, then ``window`` seconds of silence."""
    kind = rng.choice(QUIET_FAULTS)
    ours = watch.client
    fault = await _cut(kind, proxy, ours, links)
    sent_at = time.monotonic()
    texts = {k: [f"quiet {n} {j}" for j in range(PER_ROUND)] for k in receivers}
    for k, r in receivers.items():
        for text in texts[k]:
            r.sent_to.append(text)
            await server.send_message(bob.id, r.user.id, text)
    await asyncio.sleep(rng.uniform(0.2, 1.0))
    # Was each receiver really off its link while Bob sent? (raw data, checked in notes)
    down = {
        OURS: ours.state is not ConnectionState.CONNECTED
        and not watch.first(fault, lambda c: c.new is ConnectionState.CONNECTED)
    }
    for k, log in links.items():
        down[k] = kind == "blackhole" or (
            bool(log.first_after(log.downs, fault)) and not log.first_after(log.ups, fault)
        )
    proxy.heal()
    heal = time.monotonic()
    await asyncio.sleep(window)
    back = {OURS: watch.first(heal, lambda c: c.new is ConnectionState.CONNECTED)}
    back.update({k: log.first_after(log.ups, heal) for k, log in links.items()})
    return {
        "fault": kind,
        "fault_at": fault,
        "sent_at": sent_at,
        "heal": heal,
        "texts": texts,
        "down_while_sent": down,
        "back": back,
        "on_time": {k: r.on_time(texts[k], heal + window) for k, r in receivers.items()},
    }


def _round_raw(entry: dict[str, Any]) -> dict[str, Any]:
    """One round for results.json: times relative to its heal, no message texts."""
    heal = entry["heal"]
    return {
        "fault": entry["fault"],
        "down_after_s": round(entry["sent_at"] - entry["fault_at"], 3),
        "outage_s": round(heal - entry["fault_at"], 3),
        "down_while_sent": entry["down_while_sent"],
        "heal_to_link_up_s": {
            k: None if t is None else round(t - heal, 3) for k, t in entry["back"].items()
        },
        "on_time": entry["on_time"],
    }


def _quiet_counts(r: _Receiver, log: list[dict[str, Any]], reveal: float) -> dict[str, Any]:
    """One receiver's totals over the quiet case."""
    texts = [t for entry in log for t in entry["texts"][r.kind]]
    on_time = sum(entry["on_time"][r.kind] for entry in log)
    after_reveal = [r.first_seen[t] - reveal for t in texts if r.first_seen.get(t, 0) >= reveal]
    return {
        "sent_while_down": len(texts),
        "late_or_lost_in_window": len(texts) - on_time,
        "delivered_only_after_reveal": len(after_reveal),
        "reveal_to_delivery_max_s": round(max(after_reveal), 3) if after_reveal else None,
        "never_delivered": sum(1 for t in r.sent_to if not r.received[t]),
        "duplicated": sum(max(0, r.received[t] - 1) for t in r.sent_to),
        "all_sent_while_down": all(entry["down_while_sent"][r.kind] for entry in log),
    }


def _quiet_rows(result: Scenario, quiet: dict[str, Any]) -> None:
    case = f"quiet after fault x{quiet['rounds']}"
    window = quiet["window"]
    for kind in KINDS:
        d = quiet["per_client"][kind]
        ours = kind == OURS
        for metric, value in (
            (
                f"late or lost within {window:g} s (of {d['sent_while_down']})",
                d["late_or_lost_in_window"],
            ),
            ("never delivered", d["never_delivered"]),
            ("duplicated deliveries", d["duplicated"]),
        ):
            result.rows.append(
                Row(
                    NAME,
                    case,
                    kind,
                    metric,
                    value,
                    goal="0" if ours else "",
                    met=(value == 0) if ours else None,
                )
            )
    faults = collections.Counter(entry["fault"] for entry in quiet["round_log"])
    result.notes.append(
        f"Quiet after fault: {quiet['rounds']} rounds ({dict(faults)}); in each, Bob sent "
        f"every receiver {quiet['per_round']} messages while its link was down, then the "
        f"proxy healed and nothing else was sent for {window:g} s. At the end Bob sent one "
        f"more message (it reveals any pts gap) and everyone got up to {quiet['settle']:g} "
        "s to fetch what was missing."
    )
    for kind in KINDS:
        d = quiet["per_client"][kind]
        ups = [
            entry["heal_to_link_up_s"][kind]
            for entry in quiet["round_log"]
            if entry["heal_to_link_up_s"][kind] is not None
        ]
        back = "CONNECTED (caught up)" if kind == OURS else "connection up"
        late = d["reveal_to_delivery_max_s"]
        result.notes.append(
            f"{kind} (quiet): {back} {min(ups, default=0):.2f}-{max(ups, default=0):.2f} s "
            f"after each heal ({len(ups)} of {len(quiet['round_log'])} rounds); "
            f"{d['delivered_only_after_reveal']} of {d['sent_while_down']} messages arrived "
            "only after the revealing message"
            + (f" (the last {late:.2f} s after it)" if late is not None else "")
            + "; off its link during every send: "
            + ("yes." if d["all_sent_while_down"] else "NO.")
        )
    if quiet["telethon_gave_up"]:
        result.notes.append(f"Raw Telethon gave up in the quiet case: {quiet['telethon_gave_up']}.")
