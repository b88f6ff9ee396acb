"""Fleets: 3 worker processes share N accounts through PostgreSQL (issue 13).

The real thing, measured end to end: ``resilient_tg.testing.FleetHarness`` starts
fleet workers (``python -m resilient_tg.testing._fleet_worker``, one `Fleet` each) on
the local PostgreSQL and one MTProtoTestServer, with scaled-down timing (keepalive
2 s + 2 s, ``lease_ttl`` 8 s, ``claim_interval`` 1 s; production defaults are 5+5, 30
and 5: the same arithmetic, slower).

- start: 3 workers launched together until every account is CONNECTED and each worker
  is within one of its share (claim throughput = N / that time);
- rest: 20 s (5 s quick) with nothing happening: database transactions per account per
  minute (``pg_stat_database.xact_commit`` of a database of the benchmark's own,
  ``rtg_bench``, created when missing, so nothing else on the server is counted; with
  ``claim_interval`` 1 s each worker runs a round a second, five times the default's
  rate), CPU per 100 accounts (the
  workers' user+system time; % of one core) and resident memory per worker and per
  account (the workers' RSS / N: the interpreter and libraries included);
- kill: SIGKILL one worker until all its accounts are CONNECTED on the others, against
  the bound ``lease_ttl + claim_interval + 5 s``;
- join: a fourth worker starts, until every worker is within one of its share
  (rebalance throughput = accounts moved / that time).

Raw Telethon has no fleet, so there is nothing to put beside these rows; the memory
scenario compares one client of ours with one of Telethon's.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_tg.stores import SessionData, SQLStore
from resilient_tg.testing import FleetHarness, MTProtoTestServer

from ._common import OURS, Config, Row, Scenario, bench_server, drop_prefixed_tables

NAME = "workers"
TITLE = "Fleets: 3 worker processes over PostgreSQL"
GOAL = "a killed worker's accounts CONNECTED elsewhere within lease_ttl + claim_interval + 5 s"
BASE_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BENCH_DATABASE = "rtg_bench"  # the workers' own: its transaction count is theirs alone
PG_URL = make_url(BASE_URL).set(database=BENCH_DATABASE).render_as_string(hide_password=False)
KEEPALIVE = (2.0, 2.0)
LEASE_TTL = 8.0
CLAIM_INTERVAL = 1.0
SLACK = 5.0
SETTLE = LEASE_TTL / 2  # after the start: first flushes and renewals are done
LIMIT = 180.0


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    n = int(os.environ.get("RESILIENT_TG_BENCH_FLEET_ACCOUNTS") or cfg.n(300, 60))
    rest = cfg.n(20, 5)
    prefix = f"rtgbench_{os.getpid()}_"
    async with bench_server(result) as server:
        await _ensure_database()
        raw: dict[str, Any] = {"accounts": n, "rest_seconds": rest}
        result.raw = raw  # filled phase by phase: a run that fails says where and how far
        try:
            await _seed(server, prefix, n)
            await _measure(server, prefix, n, rest, raw)
        except Exception as exc:  # noqa: BLE001 - reported as the scenario's error, with how far it got
            result.error = (
                f"{type(exc).__name__} in phase {raw.get('phase')!r} with "
                f"{raw.get('connected_at_end')} of {n} accounts CONNECTED"
            )
            return result
        finally:
            await _drop(prefix)
    _rows(result, n, raw)
    return result


async def _measure(
    server: MTProtoTestServer, prefix: str, n: int, rest: float, raw: dict[str, Any]
) -> None:
    async with anyio.create_task_group() as group:
        harness = FleetHarness(
            group,
            server,
            PG_URL,
            prefix,
            keepalive=KEEPALIVE,
            lease_ttl=LEASE_TTL,
            claim_interval=CLAIM_INTERVAL,
        )
        try:
            started = time.monotonic()
            raw["phase"] = "start"
            for name in ("w1", "w2", "w3"):
                await harness.start(name)
            await harness.until(lambda: _balanced(harness, n, 3), LIMIT)
            raw["start_seconds"] = time.monotonic() - started

            pids = [w.pid for w in harness.live()]
            await anyio.sleep(SETTLE)
            xacts, cpu = await _xacts(), _cpu(pids)
            at = time.monotonic()
            await anyio.sleep(rest)
            span = time.monotonic() - at
            raw["xacts_per_account_minute"] = (await _xacts() - xacts) / n / span * 60
            raw["cpu_percent_per_100"] = (_cpu(pids) - cpu) / span * 100 / n * 100
            raw["rss_kib_per_account"] = sum(_rss(p) for p in pids) / n / 1024
            raw["rss_mib_per_worker"] = sum(_rss(p) for p in pids) / len(pids) / 2**20

            raw["phase"] = "kill"
            victim = harness.workers["w3"]
            orphans = set(victim.connected)
            await harness.kill("w3")
            killed = time.monotonic()
            await harness.until(lambda: orphans <= set(harness.connected()), LIMIT)
            raw["kill_seconds"] = time.monotonic() - killed
            raw["orphans"] = len(orphans)

            raw["phase"] = "join"
            before = harness.connected()
            joined = time.monotonic()
            await harness.start("w4")
            await harness.until(lambda: _balanced(harness, n, 3), LIMIT)
            raw["join_seconds"] = time.monotonic() - joined
            after = harness.connected()
            raw["moved"] = sum(before.get(a) != w for a, w in after.items())
            raw["max_links_per_key"] = server.max_links_per_key()
            raw["phase"] = "done"
        finally:
            raw["connected_at_end"] = len(harness.connected())
            await harness.aclose()
            group.cancel_scope.cancel()


def _balanced(harness: FleetHarness, n: int, workers: int) -> bool:
    connected = harness.connected()
    counts = collections.Counter(connected.values())
    return (
        len(connected) == n
        and len(counts) == workers
        and all(abs(c - n / workers) <= 1 for c in counts.values())
    )


def _rows(result: Scenario, n: int, raw: dict[str, Any]) -> None:
    def row(case: str, metric: str, value: Any, unit: str, **kw: Any) -> None:
        result.rows.append(Row(NAME, case, OURS, metric, value, unit, **kw))

    bound = LEASE_TTL + CLAIM_INTERVAL + SLACK
    row(
        "start",
        f"3 workers, {n} accounts: all CONNECTED and even",
        round(raw["start_seconds"], 1),
        "s",
    )
    row("start", "claim throughput", round(n / raw["start_seconds"], 1), "accounts/s")
    row(
        "rest",
        "database transactions per account per minute",
        round(raw["xacts_per_account_minute"], 2),
        "",
    )
    row("rest", "CPU per 100 accounts", round(raw["cpu_percent_per_100"], 1), "% of a core")
    row(
        "rest",
        "resident memory per account (workers' RSS / N)",
        round(raw["rss_kib_per_account"], 1),
        "KiB",
    )
    kill = raw["kill_seconds"]
    row(
        "kill -9",
        f"{raw['orphans']} accounts CONNECTED elsewhere",
        round(kill, 1),
        "s",
        goal=f"<= {bound:g} s",
        met=kill <= bound,
    )
    row("join", "a 4th worker: all even again", round(raw["join_seconds"], 1), "s")
    row("join", "rebalance throughput", round(raw["moved"] / raw["join_seconds"], 1), "accounts/s")
    links = raw["max_links_per_key"]
    row("all", "most links open at once with one auth key", links, "", goal="1", met=links == 1)


async def _seed(server: MTProtoTestServer, prefix: str, n: int) -> None:
    base = SQLStore(PG_URL, name="seed", table_prefix=prefix)
    try:
        for i in range(n):
            user = server.create_user(f"+1777{i:07d}", f"Bench {i}")
            key = server.issue_auth_key(user.id)
            await base.session(f"acct-{i:04d}").save(
                SessionData(
                    dc_id=server.dc_id,
                    server_address=server.host,
                    port=server.port,
                    auth_key=key,
                    ever_authorized=True,
                )
            )
    finally:
        await base.aclose()


async def _ensure_database() -> None:
    """Create the benchmark's database when missing (PostgreSQL cannot in a transaction)."""
    store = SQLStore(BASE_URL, name="create")
    engine = create_async_engine(store._database.target.url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": BENCH_DATABASE},
            )
            if not found:
                await conn.execute(sa.text(f"CREATE DATABASE {BENCH_DATABASE}"))
    finally:
        await engine.dispose()
        await store.aclose()


async def _drop(prefix: str) -> None:
    store = SQLStore(PG_URL, name="drop", table_prefix=prefix)
    tables = ("fleet_accounts", "fleet_workers", "leases", "sessions", "schema")
    try:
        await drop_prefixed_tables(store, tables)
    finally:
        await store.aclose()


async def _xacts() -> int:
    store = SQLStore(PG_URL, name="xacts")
    engine = create_async_engine(store._database.target.url)
    try:
        async with engine.connect() as conn:
            value = await conn.scalar(
                sa.text(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
            )
            return int(value or 0)
    finally:
        await engine.dispose()


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
