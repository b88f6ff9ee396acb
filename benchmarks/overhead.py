"""4. Overhead: request round trips through ResilientClient vs the same Telethon alone.

Same server, no proxy, each client its own account. ``get_me()`` (users.getUsers) and
``send_message`` (messages.sendMessage), timed one by one, in interleaved blocks of 50
so that drift on a noisy machine hits both sides alike.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ._common import (
    OURS,
    TELETHON_DEFAULT,
    Config,
    Row,
    Scenario,
    bench_server,
    input_peer,
    new_user,
    open_ours,
    open_telethon,
    percentile,
)

NAME = "overhead"
TITLE = "Request overhead (no faults)"
GOAL = "ours within 5% of raw Telethon (p50 and p99)"
BLOCK = 50
KINDS = (OURS, TELETHON_DEFAULT)


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = cfg.n(5000, 200)
    samples: dict[str, dict[str, list[float]]] = {
        op: {k: [] for k in KINDS} for op in ("get_me", "send_message")
    }
    async with bench_server(result) as server, contextlib.AsyncExitStack() as stack:
        bob = new_user(server, "Bob")
        peer = input_peer(bob)
        ours, _ = await stack.enter_async_context(open_ours(server, new_user(server, "Ours")))
        raw, _ = await stack.enter_async_context(open_telethon(server, new_user(server, "Raw")))
        clients = {OURS: ours.telegram, TELETHON_DEFAULT: raw}

        async def get_me(client: Any, i: int) -> None:
            await client.get_me()

        async def send(client: Any, i: int) -> None:
            await client.send_message(peer, f"overhead {i}")

        for op, call in (("get_me", get_me), ("send_message", send)):
            for client in clients.values():  # warm up: first calls resolve and cache
                for i in range(10):
                    await call(client, -i)
            for block in range(0, n, BLOCK):
                order = KINDS if (block // BLOCK) % 2 == 0 else KINDS[::-1]
                for kind in order:
                    for i in range(block, min(n, block + BLOCK)):
                        t = time.perf_counter()
                        await call(clients[kind], i)
                        samples[op][kind].append(time.perf_counter() - t)
    result.raw = {
        "n": n,
        "samples_ms": {
            op: {k: [round(s * 1000, 4) for s in v] for k, v in per.items()}
            for op, per in samples.items()
        },
    }
    for op, per in samples.items():
        for q in (50, 99):
            ours_q = percentile(per[OURS], q)
            raw_q = percentile(per[TELETHON_DEFAULT], q)
            assert ours_q is not None
            assert raw_q is not None
            over = ours_q / raw_q - 1
            result.rows.append(
                Row(
                    NAME,
                    f"{op} x{n}",
                    OURS,
                    f"p{q}",
                    ours_q * 1000,
                    "ms",
                    1.0,
                    f"<= 1.05 x Telethon ({over:+.1%})",
                    over <= 0.05,
                )
            )
            result.rows.append(
                Row(
                    NAME,
                    f"{op} x{n}",
                    TELETHON_DEFAULT,
                    f"p{q}",
                    raw_q * 1000,
                    "ms",
                    raw_q / ours_q,
                )
            )
    return result


def plot(scenario: Scenario, fig: Any) -> None:
    samples = scenario.raw["samples_ms"]
    for i, (op, per) in enumerate(samples.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        for kind, values in per.items():
            ordered = sorted(values)
            ys = [(j + 1) / len(ordered) for j in range(len(ordered))]
            ax.plot(ordered, ys, label=kind)
        ax.set_xscale("log")
        ax.set_xlabel("round trip (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(op)
        ax.legend(fontsize=8)
