"""Fleets of real worker processes on MariaDB and on SQLite (one host, one file): the
same guarantees as on PostgreSQL (tests/test_fleet_process.py), at a smaller scale.

3 workers, 60 accounts: exactly once while nobody dies; kill -9 of a worker, whose
accounts are CONNECTED elsewhere within lease_ttl + claim_interval + 5 s; a rolling
restart of the survivors; every message sent meanwhile arrives; and the server never
saw two links open with one auth key.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from resilient_tg.testing import FleetHarness, MTProtoTestServer, TestUser

from .fleettools import database_url, drop_fleet_tables, seed_accounts, unique_prefix
from .test_fleet_process import CLAIM_INTERVAL, KEEPALIVE, LEASE_TTL, SLACK, Sender

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.exclusive]

ACCOUNTS = 60
LIMIT = 60.0


@pytest.fixture(params=["mariadb", "sqlite"])
async def fleet(
    request: pytest.FixtureRequest, mtproto_server: MTProtoTestServer, tmp_path: Path
) -> AsyncIterator[tuple[FleetHarness, dict[str, TestUser]]]:
    url = database_url(request.param, tmp_path)
    prefix = unique_prefix()
    users = await seed_accounts(mtproto_server, url, prefix, ACCOUNTS)
    try:
        async with anyio.create_task_group() as group:
            harness = FleetHarness(
                group,
                mtproto_server,
                url,
                prefix,
                keepalive=KEEPALIVE,
                lease_ttl=LEASE_TTL,
                claim_interval=CLAIM_INTERVAL,
            )
            try:
                yield harness, users
            finally:
                await harness.aclose()
                group.cancel_scope.cancel()
    finally:
        await drop_fleet_tables(url, prefix)


def balanced(harness: FleetHarness, workers: int) -> bool:
    connected = harness.connected()
    counts = collections.Counter(connected.values())
    share = ACCOUNTS / workers
    return (
        len(connected) == ACCOUNTS
        and len(counts) == workers
        and all(abs(n - share) <= 1 for n in counts.values())
    )


async def test_kill_9_and_a_rolling_restart_lose_nothing_and_never_run_a_key_twice(
    mtproto_server: MTProtoTestServer, fleet: tuple[FleetHarness, dict[str, TestUser]]
) -> None:
    harness, users = fleet
    sender = Sender(mtproto_server, users)
    for name in ("w1", "w2", "w3"):
        await harness.start(name)
    await harness.ready("w1", "w2", "w3")
    await harness.until(lambda: balanced(harness, 3), LIMIT)

    await sender.send(30)
    await harness.until(lambda: len(harness.received()) == 30, 30)
    assert set(harness.received()) == set(sender.sent)
    assert set(harness.received().values()) == {1}  # nobody died: exactly once

    orphans = set(harness.workers["w3"].connected)
    async with anyio.create_task_group() as sending:
        sending.start_soon(sender.keep_sending, 10.0)
        await harness.kill("w3")
        killed = anyio.current_time()
        bound = LEASE_TTL + CLAIM_INTERVAL + SLACK
        await harness.until(lambda: orphans <= set(harness.connected()), bound + 30)
        recovered = anyio.current_time() - killed
        assert recovered <= bound, f"took {recovered:.1f}s, bound {bound:.1f}s"

        await harness.start("w3b")
        await harness.until(lambda: balanced(harness, 3), LIMIT)
        for old, new in (("w1", "w1b"), ("w2", "w2b")):
            assert await harness.stop(old) == 0  # SIGTERM: drains, exits 0
            await harness.start(new)
            await harness.until(lambda: balanced(harness, 3), LIMIT)
        sending.cancel_scope.cancel()

    with contextlib.suppress(TimeoutError):
        await harness.until(lambda: set(sender.sent) <= set(harness.received()), 30)
    missing = sorted(set(sender.sent) - set(harness.received()))
    assert not missing, harness.story(missing)
    assert mtproto_server.max_links_per_key() == 1
