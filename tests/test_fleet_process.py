"""Fleets of real worker processes on the real PostgreSQL and the test server: 3 workers,
300 accounts; kill -9, SIGSTOP, a database partition, a join, a rolling restart.

Safety is the server's record: never two links open with one auth key
(``max_links_per_key() == 1``). Delivery: every message sent reaches some worker's
handler at least once, and exactly once while no worker dies.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from resilient_tg.testing import MTProtoTestServer, TestUser

from .fleetharness import FleetHarness
from .fleettools import PG_URL, drop_fleet_tables, seed_accounts, unique_prefix

pytestmark = pytest.mark.anyio

ACCOUNTS = int(os.environ.get("RESILIENT_TG_TEST_FLEET_ACCOUNTS", "300"))
# The server drops a link silent for 4 s (interval + timeout); the lease outlasts that
# by the fleet's required margin (1.5 x 4 + 1 = 7 s).
KEEPALIVE = (2.0, 2.0)
LEASE_TTL = 8.0
CLAIM_INTERVAL = 1.0
# Connecting 100 accounts on a loaded 2-core machine: the slack the issue allows.
SLACK = 5.0
START_LIMIT = 120.0


@pytest.fixture
async def fleet(
    mtproto_server: MTProtoTestServer,
) -> AsyncIterator[tuple[FleetHarness, dict[str, TestUser]]]:
    prefix = unique_prefix()
    users = await seed_accounts(mtproto_server, PG_URL, prefix, ACCOUNTS)
    try:
        async with anyio.create_task_group() as group:
            harness = FleetHarness(
                group,
                mtproto_server,
                PG_URL,
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
        await drop_fleet_tables(PG_URL, prefix)


class Sender:
    """Sends numbered messages to random accounts; remembers what it sent."""

    def __init__(self, server: MTProtoTestServer, users: dict[str, TestUser]) -> None:
        self.server = server
        self.users = users
        self.author = server.create_user("+19990000001", "Sender")
        self.sent: list[tuple[str, str]] = []
        self._numbers = itertools.count()
        self._rng = random.Random(7)

    async def send(self, count: int) -> None:
        names = sorted(self.users)
        for _ in range(count):
            name = self._rng.choice(names)
            text = f"m{next(self._numbers)}"
            await self.server.send_message(self.author.id, self.users[name].id, text)
            self.sent.append((name, text))

    async def keep_sending(self, per_second: float) -> None:
        while True:
            await self.send(1)
            await anyio.sleep(1 / per_second)


def balanced(harness: FleetHarness, workers: int) -> bool:
    connected = harness.connected()
    if len(connected) != ACCOUNTS:
        return False
    counts = collections.Counter(connected.values())
    share = ACCOUNTS / workers
    return len(counts) == workers and all(abs(n - share) <= 1 for n in counts.values())


async def test_a_killed_workers_accounts_reconnect_elsewhere_in_time_and_nothing_is_lost(
    mtproto_server: MTProtoTestServer, fleet: tuple[FleetHarness, dict[str, TestUser]]
) -> None:
    harness, users = fleet
    sender = Sender(mtproto_server, users)
    for name in ("w1", "w2", "w3"):
        await harness.start(name)
    await harness.ready("w1", "w2", "w3")
    await harness.until(lambda: balanced(harness, 3), START_LIMIT)

    # While no worker dies: each message reaches exactly one handler, once.
    await sender.send(200)
    await harness.until(lambda: len(harness.received()) == 200, 30)
    assert set(harness.received()) == set(sender.sent)
    assert set(harness.received().values()) == {1}

    victim = harness.workers["w3"]
    orphans = set(victim.connected)
    async with anyio.create_task_group() as sending:
        sending.start_soon(sender.keep_sending, 20.0)
        await harness.kill("w3")
        killed = anyio.current_time()
        await harness.until(
            lambda: orphans <= set(harness.connected()), LEASE_TTL + CLAIM_INTERVAL + SLACK
        )
        recovered = anyio.current_time() - killed
        await anyio.sleep(1.0)  # a little traffic after the recovery too
        sending.cancel_scope.cancel()
    assert recovered <= LEASE_TTL + CLAIM_INTERVAL + SLACK
    # Every message sent meanwhile reaches a handler at least once.
    await harness.until(lambda: set(sender.sent) <= set(harness.received()), 30)
    assert mtproto_server.max_links_per_key() == 1
