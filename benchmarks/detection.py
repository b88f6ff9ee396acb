"""1. Dead-link detection: a black hole, and the time until each client knows.

Ours knows when its state leaves CONNECTED (the on_disconnected transition). Raw
Telethon knows when its sender starts reconnecting, which it does by calling the
connection's ``disconnect()``: a ``connection=`` subclass records the time. Telethon's
ping interval is fixed (60 s), so the scaled-down case has no Telethon counterpart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

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
    new_user,
    open_ours,
    open_telethon,
    poll_until,
    ratio,
    summary,
)

NAME = "detection"
TITLE = "Dead-link detection (black hole)"
GOAL = "ours within 1.1 x (interval + timeout); ratio to Telethon reported"

RECONNECT = ReconnectPolicy(initial_delay=0.2, max_delay=1.0, connect_timeout=3.0)
TELETHON_PING = 60.0  # Telethon's fixed keepalive period (client/updates.py)


def _left_connected(change: object) -> bool:
    return getattr(change, "old", None) is ConnectionState.CONNECTED


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    async with bench_server(result) as server, FaultProxy(server.host, server.port) as proxy:
        scaled = await _scaled(cfg, server, proxy, rng)
        result.raw["scaled"] = scaled
        _rows_for(result, "scaled 0.5+0.5 s", 1.0, scaled, telethon_na=True)
        if cfg.quick:
            result.notes.append(
                "Quick mode: only the scaled-down case; with defaults Telethon needs 60-120 s."
            )
        else:
            defaults = await _defaults(server, proxy, rng)
            result.raw["defaults"] = defaults
            _rows_for(result, "defaults", 10.0, defaults, telethon_na=False)
    return result


async def _scaled(
    cfg: Config, server: MTProtoTestServer, proxy: FaultProxy, rng: object
) -> dict[str, list[float | None]]:
    """Rounds of 5 clients at KeepalivePolicy(0.5, 0.5), black-holed at a random phase."""
    keepalive = KeepalivePolicy(interval=0.5, timeout=0.5)
    samples: list[float | None] = []
    for _ in range(cfg.n(6, 2)):
        user = new_user(server, "Detect")
        async with contextlib.AsyncExitStack() as stack:
            watches: list[OursWatch] = []
            for _ in range(5):
                _, watch = await stack.enter_async_context(
                    open_ours(
                        server,
                        user,
                        port=proxy.port,
                        keepalive=keepalive,
                        reconnect=RECONNECT,
                    )
                )
                watches.append(watch)
            await asyncio.sleep(rng.uniform(0.6, 1.6))  # type: ignore[attr-defined]
            start = time.monotonic()
            proxy.blackhole()
            await poll_until(
                lambda s=start, ws=watches: all(w.first(s, _left_connected) for w in ws), 5.0
            )
            proxy.heal()
            samples += [_since(w.first(start, _left_connected), start) for w in watches]
    return {OURS: samples}


async def _defaults(
    server: MTProtoTestServer, proxy: FaultProxy, rng: object
) -> dict[str, list[float | None]]:
    """Real defaults: ours KeepalivePolicy() vs Telethon's 60 s ping, one shared black hole.

    Telethon clients are started over one ping period so the black hole finds them at
    different points of their cycle; ours likewise over its 5 s interval.
    """
    user = new_user(server, "Defaults")
    limit = 2 * TELETHON_PING + 30.0
    async with contextlib.AsyncExitStack() as stack:
        links: dict[str, list[LinkLog]] = {TELETHON_DEFAULT: [], TELETHON_FOREVER: []}
        starts = sorted(rng.uniform(0, TELETHON_PING) for _ in range(8))  # type: ignore[attr-defined]
        began = time.monotonic()
        for i, at in enumerate(starts):
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            kind = TELETHON_DEFAULT if i % 2 == 0 else TELETHON_FOREVER
            extra = {} if kind == TELETHON_DEFAULT else {"connection_retries": None}
            _, log = await stack.enter_async_context(
                open_telethon(server, user, port=proxy.port, **extra)
            )
            links[kind].append(log)
        watches: list[OursWatch] = []
        for _ in range(5):
            _, watch = await stack.enter_async_context(
                open_ours(server, user, port=proxy.port, reconnect=RECONNECT)
            )
            watches.append(watch)
            await asyncio.sleep(rng.uniform(0, 1.0))  # type: ignore[attr-defined]
        await asyncio.sleep(max(0.0, began + TELETHON_PING + 1.0 - time.monotonic()))
        start = time.monotonic()
        proxy.blackhole()

        def telethon_done() -> bool:
            return all(log.first_after(log.downs, start) for logs in links.values() for log in logs)

        await poll_until(
            lambda: telethon_done() and all(w.first(start, _left_connected) for w in watches),
            limit,
            0.1,
        )
        proxy.heal()
    samples: dict[str, list[float | None]] = {
        OURS: [_since(w.first(start, _left_connected), start) for w in watches]
    }
    for kind, logs in links.items():
        samples[kind] = [_since(log.first_after(log.downs, start), start) for log in logs]
    return samples


def _since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 3)


def _rows_for(
    result: Scenario,
    case: str,
    bound: float,
    samples: dict[str, list[float | None]],
    *,
    telethon_na: bool,
) -> None:
    goal_limit = 1.1 * bound
    ours = [s for s in samples[OURS] if s is not None]
    ours_missed = len(samples[OURS]) - len(ours)
    ours_max = max(ours) if ours else None
    ours_p50 = summary(ours)["p50"]
    met = bool(ours) and ours_missed == 0 and ours_max is not None and ours_max <= goal_limit
    result.rows.append(
        Row(NAME, case, OURS, "median", ours_p50, "s", 1.0, f"max <= {goal_limit:g} s", None)
    )
    result.rows.append(
        Row(
            NAME,
            case,
            OURS,
            f"max (n={len(samples[OURS])})",
            ours_max,
            "s",
            1.0,
            f"<= {goal_limit:g} s",
            met,
        )
    )
    if telethon_na:
        for kind in (TELETHON_DEFAULT, TELETHON_FOREVER):
            result.rows.append(Row(NAME, case, kind, "median", "N/A (no knob)", "", None, ""))
        return
    for kind in (TELETHON_DEFAULT, TELETHON_FOREVER):
        found = [s for s in samples[kind] if s is not None]
        missing = len(samples[kind]) - len(found)
        p50 = summary(found)["p50"]
        result.rows.append(Row(NAME, case, kind, "median", p50, "s", ratio(p50, ours_p50)))
        value = max(found) if found else None
        label = f"max (n={len(samples[kind])}{', ' + str(missing) + ' never' if missing else ''})"
        result.rows.append(Row(NAME, case, kind, label, value, "s", ratio(value, ours_max)))


def plot(scenario: Scenario, fig: Any) -> None:
    cases = [("scaled", "scaled 0.5+0.5 s", 1.0), ("defaults", "defaults", 10.0)]
    cases = [c for c in cases if c[0] in scenario.raw]
    for i, (key, label, bound) in enumerate(cases):
        ax = fig.add_subplot(1, len(cases), i + 1)
        samples = scenario.raw[key]
        kinds = [k for k in samples if samples[k]]
        for j, kind in enumerate(kinds):
            ys = [s for s in samples[kind] if s is not None]
            ax.scatter([j] * len(ys), ys, alpha=0.6, s=18)
        ax.axhline(1.1 * bound, color="red", linestyle="--", linewidth=1, label="goal (ours)")
        ax.set_xticks(range(len(kinds)), [k.replace(" (", "\n(") for k in kinds], fontsize=7)
        ax.set_ylabel("seconds until the client knows")
        if key == "defaults":
            ax.set_yscale("log")
        ax.set_title(label)
        ax.legend(fontsize=8)
