"""2b/2c. Back after an outage: from the heal to the first answered request.

Two kinds of outage. A *refusal* resets the live links and refuses connects (the
server's host is up, nothing listens: attempts fail at once and cost the server
nothing). A *black hole* silently eats every byte: the live link goes quiet, new TCP
connects are accepted and then never answered. At heal the proxy listens again, or
aborts (RST) every link that lost bytes in the hole.

Every client (ours with default policies; raw Telethon with ``connection_retries=None``,
which retries every second forever) sits behind a RecordingProxy of its own with a key
of its own, and runs a request probe (``updates.getState`` in a loop, each try bounded
to 1 s) from before the fault. All samples of every outage length run at once, from one
common fault, so a full run takes as long as its longest outage; each sample's outage
lasts its nominal length plus a phase drawn from U(0, ``PHASE_MAX``) so that heals land
at random points of raw Telethon's 1 s retry cycle and of our probe cycle.

The proxy's record of each link (accepted, connected upstream, closed) gives the most
links of one key the server had open at one moment (see ``_probe.RecordingProxy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from typing import Any

import anyio

from resilient_tg import ConnectionState

from ._common import (
    OURS,
    TELETHON_FOREVER,
    Config,
    Row,
    Scenario,
    bench_server,
    new_user,
    poll_until,
    ratio,
    summary,
)
from ._probe import Subject, gave_up, open_subject

NAME = "recovery"
TITLE = "Back after an outage"
GOAL = (
    "refusal: max <= 1.5 s after heal and <= raw Telethon's max + 0.5 s; black hole: "
    "max <= 2 s after heal, at most one link per key open at any moment"
)
KINDS = (OURS, TELETHON_FOREVER)
REFUSAL_MAX = 1.5
REFUSAL_MARGIN = 0.5
BLACKHOLE_MAX = 2.0
PHASE_MAX = 1.0  # raw Telethon's retry_delay: the phase covers one whole retry cycle
WAIT_AFTER_HEAL = 20.0  # a client not back by then counts as "never"


def _outages(cfg: Config) -> list[tuple[str, float]]:
    if cfg.quick:
        return [("refused", 1.0), ("refused", 3.0), ("blackhole", 2.0)]
    return [("refused", s) for s in (1.0, 10.0, 60.0, 180.0)] + [
        ("blackhole", s) for s in (10.0, 60.0)
    ]


def _case(fault: str, seconds: float) -> str:
    return f"{fault} {seconds:g} s"


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    n = cfg.n(5, 2)
    outages = _outages(cfg)
    async with bench_server(result) as server, contextlib.AsyncExitStack() as stack:
        subjects: list[Subject] = []
        user = new_user(server, "Recovery")
        for fault, seconds in outages:
            for _ in range(n):
                for kind in KINDS:
                    extra = {} if kind == OURS else {"connection_retries": None}
                    subject = await open_subject(stack, server, user, kind, **extra)
                    subject.tag = _case(fault, seconds)
                    subject.phase = rng.uniform(0.0, PHASE_MAX)
                    subjects.append(subject)
        await _run_outages(subjects)
    for fault, seconds in outages:
        case = _case(fault, seconds)
        data = _data([s for s in subjects if s.tag == case], seconds)
        result.raw[case] = data
        _rows(result, case, fault, n, data)
    result.notes.append(
        f"All {len(subjects)} clients ran at once (one server, one event loop, a proxy "
        f"each); each outage lasted its nominal length plus a phase from U(0, "
        f"{PHASE_MAX:g} s). Raw Telethon with its defaults gives up after 5 failed "
        "reconnects (about 5 s of refusal) and is not shown."
    )
    if cfg.quick:
        result.notes.append("Quick mode: short outages, 2 samples each.")
    return result


async def _run_outages(subjects: list[Subject]) -> None:
    async with anyio.create_task_group() as tg:
        for subject in subjects:
            tg.start_soon(subject.probe.run)
        await asyncio.sleep(1.0)
        fault = time.monotonic()
        for subject in subjects:
            subject.fault = fault
            if subject.tag.startswith("refused"):
                subject.proxy.refuse(math.inf)  # until heal()
                subject.proxy.reset()
            else:
                subject.proxy.blackhole()
        for subject in sorted(subjects, key=lambda s: _length(s)):
            await asyncio.sleep(max(0.0, fault + _length(subject) - time.monotonic()))
            subject.proxy.heal()
            subject.heal = time.monotonic()
        await poll_until(
            lambda: all(s.probe.first_after(s.heal) for s in subjects), WAIT_AFTER_HEAL, 0.05
        )
        await asyncio.sleep(0.5)  # let the links settle into the proxies' records
        tg.cancel_scope.cancel()


def _length(subject: Subject) -> float:
    """The subject's outage: its case's nominal length (``"refused 10 s"``) + its phase."""
    return float(subject.tag.split()[1]) + subject.phase


def _data(subjects: list[Subject], seconds: float) -> dict[str, Any]:
    """Raw samples per kind, in the same client order in every list."""
    data: dict[str, Any] = {"outage_seconds": seconds, "wait_after_heal": WAIT_AFTER_HEAL}
    for kind in KINDS:
        of = [s for s in subjects if s.kind == kind]
        data[kind] = {
            "heal_to_ok": [s.recovered() for s in of],
            "phase": [round(s.phase, 3) for s in of],
            "refused_for": [round(s.heal - s.fault, 3) for s in of],
            "server_links_max": [s.server_links_max() for s in of],
            "proxy_links_max": [s.proxy_links_max() for s in of],
            "attempts": [len(s.proxy.accepts(s.fault)) for s in of],
            "next_attempt_after_heal": [since_first(s.proxy.accepts(s.heal), s.heal) for s in of],
        }
        if kind == OURS:
            data[kind]["pending_delay_at_heal"] = [_pending_delay(s) for s in of]
            data[kind]["states_after"] = [s.watch.client.state.value for s in of if s.watch]
        else:
            data[kind]["gave_up"] = [gave_up(s.telethon) for s in of]
    return data


def since_first(times: list[float], start: float) -> float | None:
    return round(times[0] - start, 3) if times else None


def _pending_delay(subject: Subject) -> float | None:
    assert subject.watch is not None
    change = subject.watch.last_before(
        subject.heal, lambda c: c.new is ConnectionState.RECONNECTING
    )
    return None if change is None else change.next_delay


def _worst(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else max(v for v in values if v)


def _rows(result: Scenario, case: str, fault: str, n: int, data: dict[str, Any]) -> None:
    times = {k: data[k]["heal_to_ok"] for k in KINDS}
    worst = {k: _worst(v) if v else None for k, v in times.items()}
    ours, raw = worst[OURS], worst[TELETHON_FOREVER]
    if fault == "refused":
        limit = REFUSAL_MAX if raw is None else min(REFUSAL_MAX, raw + REFUSAL_MARGIN)
        goal = f"<= {limit:.2f} s (1.5 s; Telethon max + 0.5 s)"
    else:
        limit = BLACKHOLE_MAX
        goal = f"<= {limit:g} s"
    for kind in KINDS:
        value = worst[kind]
        never = sum(t is None for t in times[kind])
        is_ours = kind == OURS
        result.rows.append(
            Row(
                NAME,
                case,
                kind,
                f"heal->ok max (n={n})",
                value if value is not None else f"{never}/{n} never",
                "s" if value is not None else "",
                ratio(value, ours),
                goal if is_ours else "",
                (ours is not None and ours <= limit) if is_ours else None,
            )
        )
        p50 = summary([t for t in times[kind] if t is not None])["p50"]
        result.raw.setdefault("medians", {}).setdefault(case, {})[kind] = p50
        if fault == "blackhole":
            links = max(data[kind]["server_links_max"])
            result.rows.append(
                Row(
                    NAME,
                    case,
                    kind,
                    f"most links of one key at the server (n={n})",
                    links,
                    "",
                    None,
                    "<= 1" if is_ours else "",
                    links <= 1 if is_ours else None,
                )
            )


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    cases = [k for k, v in scenario.raw.items() if isinstance(v, dict) and "outage_seconds" in v]
    width = 0.35
    jitter = random.Random(0)
    for j, kind in enumerate(KINDS):
        for i, case in enumerate(cases):
            data = scenario.raw[case]
            for t in data[kind]["heal_to_ok"]:
                x = i + (j - 0.5) * width + jitter.uniform(-0.06, 0.06)
                if t is None:
                    ax.scatter([x], [data["wait_after_heal"]], marker="x", color="black", s=40)
                else:
                    ax.scatter([x], [max(t, 0.005)], color=f"C{j}", s=20)
        ax.scatter([], [], color=f"C{j}", label=kind)
    for i, case in enumerate(cases):
        limit = BLACKHOLE_MAX if case.startswith("blackhole") else REFUSAL_MAX
        ax.hlines(limit, i - 0.45, i + 0.45, color="red", linestyle="--", linewidth=1)
    ax.plot([], [], color="red", linestyle="--", linewidth=1, label="goal (ours' max)")
    ax.scatter([], [], marker="x", color="black", label="never (not within the wait)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)), [c.replace(" ", "\n", 1) for c in cases], fontsize=8)
    ax.set_ylabel("heal -> first answered request (s, log)")
    ax.set_title("Back after an outage (each dot: one client)")
    ax.legend(fontsize=8)
