"""2. Recovery after refused connects: from heal to the first successful request.

Every client runs a probe loop (``updates.getState``, each try bounded to 2 s) and sits
behind its own FaultProxy. The proxies reset the live links and refuse connects for the
outage plus a random phase of up to ``PHASE_MAX`` seconds, drawn per client, then heal.
Without the phase every heal would land at the same point of raw Telethon's fixed 1 s
retry cycle (which starts at the reset), just before its next attempt. A client that has
not answered within ``WAIT_AFTER_HEAL`` seconds of the heal "never" recovers (raw
Telethon with ``connection_retries=5`` gives up after about 35 s of failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from typing import Any

import anyio
import attrs
from telethon.tl import functions

from resilient_tg import ConnectionState, ReconnectPolicy
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

NAME = "recovery"
TITLE = "Recovery after a refusal outage"
GOAL = "ours within the policy's current delay + 0.5 s after heal, always recovers"

WAIT_AFTER_HEAL = 40.0  # > ReconnectPolicy().max_delay + margin; Telethon gets as long
PER_KIND = 3
PHASE_MAX = 1.0  # raw Telethon's retry_delay: the phase covers one whole retry cycle


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


@attrs.define
class _Subject:
    """One client behind its own proxy, and the phase its outage is lengthened by."""

    kind: str
    proxy: FaultProxy
    probe: _Probe
    phase: float
    watch: OursWatch | None = None  # ours
    telethon: Any = None  # raw Telethon
    links: LinkLog | None = None  # raw Telethon
    heal: float = math.nan

    def recovered(self) -> float | None:
        """Seconds from this client's heal to its first answered request."""
        return _since(self.probe.first_after(self.heal), self.heal)


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    outages = [1.0] if cfg.quick else [1.0, 10.0, 60.0]
    async with bench_server(result) as server:
        for seconds in outages:
            data = await _outage(server, seconds, rng)
            result.raw[f"{seconds:g}s"] = data
            _rows(result, seconds, data)
    result.notes.append(
        f"Each client has its own proxy; its refusal lasts the nominal outage plus a phase "
        f"drawn from U(0, {PHASE_MAX:g} s), so raw Telethon's 1 s retry cycle (which starts "
        "at the reset) is not aligned with the heal. Phases per client are in the raw data."
    )
    if cfg.quick:
        result.notes.append("Quick mode: the 1 s outage only.")
    return result


async def _open_subjects(
    stack: contextlib.AsyncExitStack,
    server: MTProtoTestServer,
    rng: random.Random,
) -> list[_Subject]:
    """PER_KIND clients of each kind, one account, each behind a proxy of its own."""
    user = new_user(server, "Recovery")
    policy = ReconnectPolicy()
    subjects: list[_Subject] = []

    async def proxy() -> FaultProxy:
        return await stack.enter_async_context(FaultProxy(server.host, server.port))

    for _ in range(PER_KIND):
        p = await proxy()
        client, watch = await stack.enter_async_context(
            open_ours(server, user, port=p.port, reconnect=policy)
        )
        phase = rng.uniform(0.0, PHASE_MAX)
        subjects.append(_Subject(OURS, p, _Probe(client.telegram), phase, watch=watch))
        for kind, extra in (
            (TELETHON_DEFAULT, {}),
            (TELETHON_FOREVER, {"connection_retries": None}),
        ):
            p = await proxy()
            raw, links = await stack.enter_async_context(
                open_telethon(server, user, port=p.port, **extra)
            )
            phase = rng.uniform(0.0, PHASE_MAX)
            subjects.append(_Subject(kind, p, _Probe(raw), phase, telethon=raw, links=links))
    return subjects


async def _outage(server: MTProtoTestServer, seconds: float, rng: random.Random) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        subjects = await _open_subjects(stack, server, rng)
        tg = await stack.enter_async_context(anyio.create_task_group())
        for subject in subjects:
            tg.start_soon(subject.probe.run)
        await asyncio.sleep(0.5)
        fault = time.monotonic()
        for subject in subjects:
            subject.proxy.refuse(math.inf)  # until its heal() below
            subject.proxy.reset()
        for subject in sorted(subjects, key=lambda s: s.phase):
            await asyncio.sleep(max(0.0, fault + seconds + subject.phase - time.monotonic()))
            subject.proxy.heal()
            subject.heal = time.monotonic()
        await poll_until(
            lambda: all(s.probe.first_after(s.heal) for s in subjects), WAIT_AFTER_HEAL, 0.05
        )
        tg.cancel_scope.cancel()
    return _data(seconds, fault, subjects)


def _data(seconds: float, fault: float, subjects: list[_Subject]) -> dict[str, Any]:
    """Raw samples: per kind, in the same client order in every list."""
    kinds = (OURS, TELETHON_DEFAULT, TELETHON_FOREVER)
    of = {k: [s for s in subjects if s.kind == k] for k in kinds}
    ours = of[OURS]
    data: dict[str, Any] = {"outage_seconds": seconds, "wait_after_heal": WAIT_AFTER_HEAL}
    for kind in kinds:
        data[kind] = [s.recovered() for s in of[kind]]
    data["phase"] = {k: [round(s.phase, 3) for s in of[k]] for k in kinds}
    data["refused_for"] = {k: [round(s.heal - fault, 3) for s in of[k]] for k in kinds}
    # the delay the pending attempt was scheduled with
    data["ours_current_delay"] = [_current_delay(s.watch, s.heal) for s in ours if s.watch]
    data["telethon_next_attempt_after_heal"] = {
        k: [_next_attempt(s) for s in of[k]] for k in (TELETHON_DEFAULT, TELETHON_FOREVER)
    }
    data["telethon_gave_up"] = {
        k: [_gave_up(s.telethon) for s in of[k]] for k in (TELETHON_DEFAULT, TELETHON_FOREVER)
    }
    data["ours_states_after"] = [s.watch.client.state.value for s in ours if s.watch]
    return data


def _next_attempt(subject: _Subject) -> float | None:
    """Seconds from the heal to raw Telethon's next connect attempt: its retry phase."""
    assert subject.links is not None
    return _since(subject.links.first_after(subject.links.attempts, subject.heal), subject.heal)


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
