"""2. Recovery after refused connects: from heal to the first successful request.

Every client runs a probe loop (``updates.getState``, each try bounded to 2 s). The
proxy resets the live links and refuses connects for the outage, then heals. A client
that has not answered within ``WAIT_AFTER_HEAL`` seconds of the heal "never" recovers
(raw Telethon with ``connection_retries=5`` gives up after about 35 s of failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import anyio
from telethon.tl import functions

from resilient_tg import ConnectionState, ReconnectPolicy
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from ._common import (
    OURS,
    TELETHON_DEFAULT,
    TELETHON_FOREVER,
    Config,
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

NAME = "recovery"
TITLE = "Recovery after a refusal outage"
GOAL = "ours within the policy's current delay + 0.5 s after heal, always recovers"

WAIT_AFTER_HEAL = 40.0  # > ReconnectPolicy().max_delay + margin; Telethon gets as long
PER_KIND = 3


class _Probe:
    """Sends a request in a loop; remembers when each one succeeded."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.successes: list[float] = []

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.call(functions.updates.GetStateRequest()), 2.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - failures are what we wait through
                await asyncio.sleep(0.05)
            else:
                self.successes.append(time.monotonic())
                await asyncio.sleep(0.02)

    def first_after(self, start: float) -> float | None:
        return next((t for t in self.successes if t >= start), None)


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    outages = [1.0] if cfg.quick else [1.0, 10.0, 60.0]
    async with bench_server(result) as server, FaultProxy(server.host, server.port) as proxy:
        for seconds in outages:
            data = await _outage(server, proxy, seconds)
            result.raw[f"{seconds:g}s"] = data
            _rows(result, seconds, data)
    if cfg.quick:
        result.notes.append("Quick mode: the 1 s outage only.")
    return result


async def _outage(server: MTProtoTestServer, proxy: FaultProxy, seconds: float) -> dict[str, Any]:
    user = new_user(server, "Recovery")
    policy = ReconnectPolicy()
    async with contextlib.AsyncExitStack() as stack:
        probes: dict[str, list[_Probe]] = {OURS: [], TELETHON_DEFAULT: [], TELETHON_FOREVER: []}
        watches: list[OursWatch] = []
        telethons: dict[str, list[Any]] = {TELETHON_DEFAULT: [], TELETHON_FOREVER: []}
        for _ in range(PER_KIND):
            client, watch = await stack.enter_async_context(
                open_ours(server, user, port=proxy.port, reconnect=policy)
            )
            watches.append(watch)
            probes[OURS].append(_Probe(client.telegram))
            for kind, extra in (
                (TELETHON_DEFAULT, {}),
                (TELETHON_FOREVER, {"connection_retries": None}),
            ):
                raw, _ = await stack.enter_async_context(
                    open_telethon(server, user, port=proxy.port, **extra)
                )
                telethons[kind].append(raw)
                probes[kind].append(_Probe(raw))
        tg = await stack.enter_async_context(anyio.create_task_group())
        for kind_probes in probes.values():
            for probe in kind_probes:
                tg.start_soon(probe.run)
        await asyncio.sleep(0.5)
        fault = time.monotonic()
        proxy.refuse(seconds)
        proxy.reset()
        await asyncio.sleep(max(0.0, fault + seconds - time.monotonic()))
        proxy.heal()
        heal = time.monotonic()

        def done() -> bool:
            return all(p.first_after(heal) for ps in probes.values() for p in ps)

        await poll_until(done, WAIT_AFTER_HEAL, 0.05)
        tg.cancel_scope.cancel()
    data: dict[str, Any] = {"outage_seconds": seconds, "wait_after_heal": WAIT_AFTER_HEAL}
    for kind, kind_probes in probes.items():
        data[kind] = [_since(p.first_after(heal), heal) for p in kind_probes]
    data["ours_current_delay"] = [
        _current_delay(w, heal) for w in watches
    ]  # the delay the pending attempt was scheduled with
    data["telethon_gave_up"] = {
        kind: [_gave_up(c) for c in clients] for kind, clients in telethons.items()
    }
    data["ours_states_after"] = [w.client.state.value for w in watches]
    return data


def _current_delay(watch: OursWatch, heal: float) -> float | None:
    change = watch.last_before(heal, lambda c: c.new is ConnectionState.RECONNECTING)
    return None if change is None else change.next_delay


def _gave_up(client: Any) -> bool:
    future = client.disconnected
    return bool(future.done() and not future.cancelled() and future.exception() is not None)


def _since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 3)


def _rows(result: Scenario, seconds: float, data: dict[str, Any]) -> None:
    case = f"refused {seconds:g} s"
    ours = data[OURS]
    delays = data["ours_current_delay"]
    within = [t is not None and (d or 0.0) + 0.5 >= t for t, d in zip(ours, delays, strict=True)]
    ours_found = [t for t in ours if t is not None]
    ours_max = max(ours_found) if ours_found else None
    ours_p50 = summary(ours_found)["p50"]
    worst_delay = max((d or 0.0) for d in delays)
    result.rows.append(
        Row(
            NAME,
            case,
            OURS,
            f"heal->ok max (n={len(ours)})",
            ours_max if len(ours_found) == len(ours) else "never",
            "s",
            1.0,
            f"<= delay + 0.5 s (delay <= {worst_delay:.2f})",
            all(within),
        )
    )
    for kind in (TELETHON_DEFAULT, TELETHON_FOREVER):
        times = data[kind]
        found = [t for t in times if t is not None]
        never = len(times) - len(found)
        value: float | str | None = max(found) if found and not never else "never"
        if found and never:
            value = f"{never}/{len(times)} never"
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                f"heal->ok max (n={len(times)})",
                value,
                "s" if isinstance(value, float) else "",
                ratio(value, ours_max) if isinstance(value, float) else None,
            )
        )
    result.raw.setdefault("medians", {})[case] = {
        OURS: ours_p50,
        **{
            k: summary([t for t in data[k] if t is not None])["p50"]
            for k in (TELETHON_DEFAULT, TELETHON_FOREVER)
        },
    }


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    outages = [k for k, v in scenario.raw.items() if isinstance(v, dict) and "outage_seconds" in v]
    kinds = (OURS, TELETHON_DEFAULT, TELETHON_FOREVER)
    width = 0.27
    for j, kind in enumerate(kinds):
        for i, outage in enumerate(outages):
            data = scenario.raw[outage]
            limit = data["wait_after_heal"]
            for t in data[kind]:
                x = i + (j - 1) * width
                if t is None:
                    ax.scatter([x], [limit], marker="x", color="black", s=40)
                else:
                    ax.scatter([x], [max(t, 0.01)], color=f"C{j}", s=20)
        ax.scatter([], [], color=f"C{j}", label=kind)
    ax.scatter([], [], marker="x", color="black", label="never (not within the wait)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(outages)), [f"refused {o}" for o in outages])
    ax.set_ylabel("heal -> first successful request (s, log)")
    ax.set_title("Recovery after refusal outages")
    ax.legend(fontsize=8)
