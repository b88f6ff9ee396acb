"""2a. A plain reset (the commonest fault): from the reset to the first answered request.

A lone client behind its own proxy, default policies. Each sample waits a random
0.3-1.3 s (so the reset lands at a random point of the keepalive cycle), resets the
proxy's links and only then starts the request probe (``updates.getState`` in a loop,
each try bounded to 1 s), so no answer can predate the reset. Ours and raw Telethon
(defaults: it reconnects at once after a reset, whatever ``connection_retries``)
alternate, sample by sample, so neither runs while the other reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ._common import (
    OURS,
    STEP_LIMIT,
    TELETHON_DEFAULT,
    Config,
    Row,
    Scenario,
    bench_server,
    new_user,
    percentile,
    poll_until,
    ratio,
)
from ._probe import Subject, open_subject

NAME = "reset"
TITLE = "Back after a reset"
GOAL = "p95 from reset to the first answered request <= 0.3 s and <= raw Telethon's p95 + 0.25 s"
KINDS = (OURS, TELETHON_DEFAULT)
P95_LIMIT = 0.3
P95_MARGIN = 0.25


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    rng = cfg.rng(NAME)
    n = cfg.n(30, 4)
    samples: dict[str, list[float | None]] = {k: [] for k in KINDS}
    async with bench_server(result) as server, contextlib.AsyncExitStack() as stack:
        subjects = [await open_subject(stack, server, new_user(server, "Reset"), k) for k in KINDS]
        for _ in range(n):
            for subject in subjects:
                await asyncio.sleep(rng.uniform(0.3, 1.3))
                samples[subject.kind].append(await _sample(subject))
    result.raw = {"n": n, "seconds": samples}
    _rows(result, n, samples)
    return result


async def _sample(subject: Subject) -> float | None:
    subject.fault = time.monotonic()
    subject.proxy.reset()
    subject.probe.start()
    try:
        await poll_until(lambda: subject.probe.first_after(subject.fault) is not None, STEP_LIMIT)
    finally:
        await subject.probe.stop()
    return subject.recovered(since_heal=False)


def _rows(result: Scenario, n: int, samples: dict[str, list[float | None]]) -> None:
    found = {k: [s for s in v if s is not None] for k, v in samples.items()}
    p95 = {k: percentile(v, 95) if len(v) == n else None for k, v in found.items()}
    ours, raw = p95[OURS], p95[TELETHON_DEFAULT]
    met = ours is not None and ours <= P95_LIMIT and (raw is None or ours <= raw + P95_MARGIN)
    for kind in KINDS:
        is_ours = kind == OURS
        for metric, value in (("p50", percentile(found[kind], 50)), ("p95", p95[kind])):
            goal = ""
            if is_ours and metric == "p95":
                limit = P95_LIMIT if raw is None else min(P95_LIMIT, raw + P95_MARGIN)
                goal = f"<= {limit:.3f} s (0.3 s; Telethon p95 + 0.25 s)"
            result.rows.append(
                Row(
                    NAME,
                    f"reset, lone client (n={n})",
                    kind,
                    f"reset->ok {metric}",
                    value if value is not None else f"{n - len(found[kind])}/{n} never",
                    "s" if value is not None else "",
                    ratio(value, percentile(found[OURS], 50 if metric == "p50" else 95)),
                    goal,
                    met if goal else None,
                )
            )


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    for j, (kind, values) in enumerate(scenario.raw["seconds"].items()):
        ys = sorted(v for v in values if v is not None)
        fractions = [(i + 1) / len(ys) for i in range(len(ys))]
        ax.plot(ys, fractions, marker=".", label=kind, color=f"C{j}")
    ax.axvline(P95_LIMIT, color="red", linestyle="--", linewidth=1, label="goal: p95 <= 0.3 s")
    ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("reset -> first answered request (s)")
    ax.set_ylabel(f"fraction of resets (n={scenario.raw['n']} each)")
    ax.set_title("Back after a reset, lone client")
    ax.legend(fontsize=8)
