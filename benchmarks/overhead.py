"""4. Overhead: request round trips through ResilientClient vs the same Telethon alone.

Same server, no proxy, each client its own account. ``get_me()`` (users.getUsers) and
``send_message`` (messages.sendMessage), timed one by one, in interleaved blocks of 50
so that drift on a noisy machine hits both sides alike. Both clients run in a child
process and the server stays here: in one process the server's allocations would set
off garbage collections whose pauses land in whichever client's request is in flight,
which at ~0.5 ms round trips decides the p99 more than either client does.

The child is ``python -m benchmarks._overhead_child SPEC.json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import (
    OURS,
    TELETHON_DEFAULT,
    Config,
    Row,
    Scenario,
    bench_server,
    new_user,
    percentile,
)

NAME = "overhead"
TITLE = "Request overhead (no faults)"
GOAL = "ours within 5% of raw Telethon (p50 and p99)"
BLOCK = 50
KINDS = (OURS, TELETHON_DEFAULT)
CHILD_LIMIT = 600.0
ROOT = Path(__file__).resolve().parent.parent


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = cfg.n(5000, 200)
    with tempfile.TemporaryDirectory(prefix="rtg-bench-overhead-") as tmp:
        async with bench_server(result) as server:
            bob = new_user(server, "Bob")
            spec = {
                "host": server.host,
                "port": server.port,
                "dc_id": server.dc_id,
                "api_id": server.api_id,
                "api_hash": server.api_hash,
                "pem": server.public_key_pem,
                "keys": {
                    kind: server.issue_auth_key(new_user(server, kind).id).hex() for kind in KINDS
                },
                "peer": [bob.id, bob.access_hash],
                "n": n,
                "block": BLOCK,
            }
            path = Path(tmp) / "spec.json"
            path.write_text(json.dumps(spec))
            path.chmod(0o600)
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks._overhead_child",
                str(path),
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            try:
                out, _ = await asyncio.wait_for(child.communicate(), CHILD_LIMIT)
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the overhead child process failed (exit {child.returncode})")
    samples: dict[str, dict[str, list[float]]] = json.loads(out.decode().strip().splitlines()[-1])
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
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    samples = scenario.raw["samples_ms"]
    for i, (op, per) in enumerate(samples.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        for kind, values in per.items():
            ordered = sorted(values)
            ys = [(j + 1) / len(ordered) for j in range(len(ordered))]
            ax.plot(ordered, ys, label=kind)
        ax.set_xscale("log")
        # A log axis over less than a decade labels its minor ticks too, and they
        # overlap: label a few round values only.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("round trip (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(op)
        ax.legend(fontsize=8)
