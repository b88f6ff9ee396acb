"""The delivery scenario's supergroup case (part of benchmarks/delivery.py).

The same three receivers as the private-message cases (ours, Telethon with defaults,
Telethon with ``connection_retries=None``), each its own account, all members of one
supergroup that Bob posts to (server-side, never faulted). Supergroup posts carry the
channel's own pts and are recovered with getChannelDifference, not getDifference.

- "supergroup, N faults": Bob posts every 100 ms while the proxy goes through random
  faults of the matrix; at the end one more post reveals any gap and everyone gets a
  settle wait. Counted: posts never delivered, posts delivered twice.
- "supergroup quiet after fault": each round cuts every link, Bob posts ``PER_ROUND``
  times while the links are down, the proxy heals and nothing else is posted for a
  quiet window. Counted: posts not delivered within the window; and after a revealing
  post and a settle wait, posts never delivered or delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import anyio

from resilient_tg import ConnectionState
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from . import delivery as d
from ._common import OURS, Row, Scenario, new_user, poll_until, ratio, wait_for_state

__all__ = ["run_supergroup", "supergroup_rows"]

STREAM_EVERY = 0.1  # seconds between Bob's posts during the storm


async def run_supergroup(
    server: MTProtoTestServer, rng: random.Random, count: int, rounds: int, window: float
) -> dict[str, Any]:
    """Both supergroup cases, each behind its own fresh proxy (same server)."""
    async with FaultProxy(server.host, server.port) as proxy:
        storm = await _storm(server, proxy, rng, count)
    async with FaultProxy(server.host, server.port) as proxy:
        quiet = await _quiet(server, proxy, rng, rounds, window)
    return {"storm": storm, "quiet": quiet}


async def _setup(
    stack: contextlib.AsyncExitStack, server: MTProtoTestServer, proxy: FaultProxy
) -> tuple[Any, Any, Any, dict[str, d._Receiver], Any, dict[str, Any], dict[str, Any]]:
    """Bob, the receivers, their supergroup, and every receiver's client having seen a
    first post (so each knows the supergroup's pts and can notice a gap in it)."""
    bob = new_user(server, "Bob")
    receivers = {kind: d._Receiver(kind, new_user(server, kind)) for kind in d.KINDS}
    room = server.create_channel(
        bob.id, "Bench room", members=[r.user.id for r in receivers.values()]
    )
    ours, watch, clients, links = await d._open_receivers(stack, server, proxy, receivers)
    await _post(server, room, bob, receivers, "sg hello")
    await poll_until(lambda: all(r.received["sg hello"] for r in receivers.values()), 10.0, 0.05)
    return bob, room, ours, receivers, watch, clients, links


async def _post(
    server: MTProtoTestServer, room: Any, bob: Any, receivers: dict[str, d._Receiver], text: str
) -> None:
    for r in receivers.values():
        r.sent_to.append(text)
    await server.post(room.id, bob.id, text)


async def _storm(
    server: MTProtoTestServer, proxy: FaultProxy, rng: random.Random, count: int
) -> dict[str, Any]:
    faults: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        bob, room, ours, receivers, _, clients, _ = await _setup(stack, server, proxy)
        world_lock = asyncio.Lock()

        async def stream() -> None:
            n = 0
            while True:
                n += 1
                async with world_lock:
                    await _post(server, room, bob, receivers, f"sg {n}")
                await asyncio.sleep(STREAM_EVERY)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            await asyncio.sleep(1.0)
            for i in range(count):
                kind = rng.choice(d.FAULTS)
                faults.append(await d.inject(kind, proxy, server, rng, world_lock))
                await wait_for_state(ours, ConnectionState.CONNECTED, 30.0)
                await asyncio.sleep(rng.uniform(0.2, 1.0) if i < count - 1 else 0.5)
            tg.cancel_scope.cancel()
        proxy.heal()
        await wait_for_state(ours, ConnectionState.CONNECTED, 30.0)
        reveal = time.monotonic()
        await _post(server, room, bob, receivers, "sg reveal")  # shows raw Telethon any gap
        await poll_until(_all_delivered(receivers), d.SETTLE, 0.1)
        await asyncio.sleep(1.0)  # late duplicates
        gave_up = [k for k in clients if k != OURS and clients[k].disconnected.done()]
    return {
        "faults": faults,
        "per_client": {k: _counts(r, reveal) for k, r in receivers.items()},
        "telethon_gave_up": gave_up,
    }


async def _quiet(
    server: MTProtoTestServer, proxy: FaultProxy, rng: random.Random, rounds: int, window: float
) -> dict[str, Any]:
    log: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        bob, room, ours, receivers, _, clients, links = await _setup(stack, server, proxy)
        for n in range(rounds):
            await d._all_up(ours, links, log[-1]["heal"] if log else 0.0)
            kind = rng.choice(d.QUIET_FAULTS)
            await d._cut(kind, proxy, ours, links)
            texts = [f"sg quiet {n} {j}" for j in range(d.PER_ROUND)]
            for text in texts:
                await _post(server, room, bob, receivers, text)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            proxy.heal()
            heal = time.monotonic()
            await asyncio.sleep(window)
            log.append(
                {
                    "fault": kind,
                    "heal": heal,
                    "texts": texts,
                    "on_time": {k: r.on_time(texts, heal + window) for k, r in receivers.items()},
                }
            )
        await d._all_up(ours, links, log[-1]["heal"] if log else 0.0)
        reveal = time.monotonic()
        await _post(server, room, bob, receivers, "sg quiet reveal")
        await poll_until(_all_delivered(receivers), d.SETTLE, 0.1)
        await asyncio.sleep(1.0)
        gave_up = [k for k in links if clients[k].disconnected.done()]
    sent = sum(len(entry["texts"]) for entry in log)
    return {
        "rounds": rounds,
        "window": window,
        "faults": [entry["fault"] for entry in log],
        "sent_while_down": sent,
        "per_client": {
            k: {
                **_counts(r, reveal),
                "late_or_lost_in_window": sent - sum(entry["on_time"][k] for entry in log),
            }
            for k, r in receivers.items()
        },
        "telethon_gave_up": gave_up,
    }


def _all_delivered(receivers: dict[str, d._Receiver]) -> Any:
    return lambda: all(all(r.received[t] for t in r.sent_to) for r in receivers.values())


def _counts(r: d._Receiver, reveal: float) -> dict[str, Any]:
    texts = r.sent_to
    return {
        "posts": len(texts),
        "lost": sum(1 for t in texts if not r.received[t]),
        "duplicated": sum(max(0, r.received[t] - 1) for t in texts),
        "delivered_only_after_reveal": sum(
            1 for t in texts if r.first_seen.get(t, 0) >= reveal and t != texts[-1]
        ),
    }


def supergroup_rows(result: Scenario, data: dict[str, Any]) -> None:
    """Rows and notes of both supergroup cases; the ratio column is a raw client's
    delivered share over ours."""
    storm, quiet = data["storm"], data["quiet"]
    cases = (
        (f"supergroup, {len(storm['faults'])} faults", storm["per_client"], None),
        (
            f"supergroup quiet after fault x{quiet['rounds']}",
            quiet["per_client"],
            quiet["window"],
        ),
    )
    for case, per, window in cases:
        ours_delivered = _delivered_share(per[OURS])
        for kind in d.KINDS:
            c = per[kind]
            ours = kind == OURS
            share = _delivered_share(c)
            metrics: list[tuple[str, Any, float | None]] = [
                (
                    f"delivered (of {c['posts']})",
                    round(100 * share, 1),
                    ratio(share, ours_delivered),
                ),
                ("lost deliveries", c["lost"], None),
                ("duplicated deliveries", c["duplicated"], None),
            ]
            if window is not None:
                metrics.insert(
                    1,
                    (
                        f"late or lost within {window:g} s (of {quiet['sent_while_down']})",
                        c["late_or_lost_in_window"],
                        None,
                    ),
                )
            for metric, value, share_ratio in metrics:
                counted = isinstance(value, int)
                result.rows.append(
                    Row(
                        d.NAME,
                        case,
                        kind,
                        metric,
                        value,
                        unit="" if counted else "%",
                        ratio=None if ours else share_ratio,
                        goal="0" if ours and counted else "",
                        met=(value == 0) if ours and counted else None,
                    )
                )
    result.notes.append(
        f"Supergroup: every receiver is a member of one supergroup; Bob posted every "
        f"{STREAM_EVERY:g} s through {len(storm['faults'])} random faults, then once more "
        f"to reveal any gap. Quiet after fault: {quiet['rounds']} rounds "
        f"({', '.join(quiet['faults'])}), {d.PER_ROUND} posts while the links were down, "
        f"then {quiet['window']:g} s of silence. Posts carry the channel's own pts and "
        "are recovered with getChannelDifference."
    )
    for case, block in (("supergroup", storm), ("supergroup quiet", quiet)):
        late = {k: v["delivered_only_after_reveal"] for k, v in block["per_client"].items()}
        result.notes.append(
            f"{case}: posts that arrived only after the revealing post: {late}."
            + (
                f" Raw Telethon gave up: {block['telethon_gave_up']}."
                if block["telethon_gave_up"]
                else ""
            )
        )


def _delivered_share(c: dict[str, Any]) -> float:
    return (c["posts"] - c["lost"]) / c["posts"] if c["posts"] else 1.0
