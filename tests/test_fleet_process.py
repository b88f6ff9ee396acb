"""Fleets of real worker processes on the real PostgreSQL and the test server: 3 workers,
300 accounts; kill -9, SIGSTOP, a database partition, a join, a rolling restart.

Safety is the server's record: never two links open with one auth key
(``max_links_per_key() == 1``). Delivery: every message sent reaches some worker's
handler at least once, and exactly once while no worker dies.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import random
import signal
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from resilient_tg.fleet import FleetAdmin
from resilient_tg.testing import FaultProxy, FleetHarness, MTProtoTestServer, TestUser

from .fleettools import PG_URL, drop_fleet_tables, seed_accounts, unique_prefix

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(900), pytest.mark.exclusive]

ACCOUNTS = int(os.environ.get("RESILIENT_TG_TEST_FLEET_ACCOUNTS", "300"))
# The server drops a link silent for 4 s (interval + timeout); the lease outlasts that
# by the fleet's required margin (1.5 x 4 + 1 = 7 s).
KEEPALIVE = (2.0, 2.0)
LEASE_TTL = 8.0
CLAIM_INTERVAL = 1.0
# Connecting a dead worker's accounts elsewhere: the slack the issue allows.
SLACK = 5.0
# Safety nets, not bounds: starting 300 accounts and evening out again after a pause or
# a restart take seconds, but minutes on a 2-core machine that is busy elsewhere too.
START_LIMIT = 240.0
SETTLE_LIMIT = 120.0
JOIN_LIMIT = 60.0  # the bound: a joining worker has its share within 60 s
MAX_MOVING = 8  # Fleet's default max_moving
TAKEOVER_LIMIT = LEASE_TTL + CLAIM_INTERVAL + 30
PG_PORT = 5432


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
    """Every account CONNECTED, on ``workers`` live workers, each within one of its share."""
    connected = harness.connected()
    if len(connected) != ACCOUNTS:
        return False
    counts = collections.Counter(connected.values())
    share = ACCOUNTS / workers
    return len(counts) == workers and all(abs(n - share) <= 1 for n in counts.values())


def assert_one_link_per_key(server: MTProtoTestServer) -> None:
    """The server never saw two links open at once with one auth key (say which, when)."""
    doubled = [c for c in server.link_counts().values() if c.max_open > 1]
    assert not doubled, f"keys with links open at once: {doubled}"


async def until_balanced(harness: FleetHarness, workers: int, limit: float) -> None:
    """Wait until `balanced`; on a timeout say what each worker and the database showed."""
    try:
        await harness.until(lambda: balanced(harness, workers), limit)
    except TimeoutError:
        seen = {
            w.name: (len(w.accounts), len(w.connected), w.exited, w.lines[-1:])
            for w in harness.workers.values()
        }
        database = "not read within 10 s"
        with anyio.move_on_after(10):
            async with FleetAdmin(
                harness.url, table_prefix=harness.prefix, worker_ttl=LEASE_TTL
            ) as admin:
                database = f"{await admin.balance()}; {await admin.workers()}"
        raise AssertionError(
            f"not {workers} even workers within {limit}s; (claimed, connected, exited, "
            f"last line) per worker: {seen}; the database: {database}"
        ) from None


async def watch_moves(url: str, prefix: str, most: list[int]) -> None:
    """Record the most handovers in flight (marked, not yet CONNECTED at the claimer)."""
    async with FleetAdmin(url, table_prefix=prefix, worker_ttl=LEASE_TTL) as admin:
        while True:
            moving = sum(a.in_handover for a in await admin.accounts())
            most[0] = max(most[0], moving)
            await anyio.sleep(0.05)


async def test_a_joining_worker_gets_its_share_gradually_and_a_killed_ones_accounts_move_in_time(
    mtproto_server: MTProtoTestServer, fleet: tuple[FleetHarness, dict[str, TestUser]]
) -> None:
    harness, users = fleet
    sender = Sender(mtproto_server, users)
    for name in ("w1", "w2", "w3"):
        await harness.start(name)
    await harness.ready("w1", "w2", "w3")
    await until_balanced(harness, 3, START_LIMIT)

    # While no worker dies: each message reaches exactly one handler, once.
    await sender.send(150)
    await harness.until(lambda: len(harness.received()) == 150, 30)
    assert set(harness.received()) == set(sender.sent)
    assert set(harness.received().values()) == {1}

    # A fourth worker joins: the others hand accounts over, at most MAX_MOVING at once
    # (as the database records them: marked until CONNECTED at the claimer).
    most = [0]
    async with anyio.create_task_group() as watching:
        watching.start_soon(watch_moves, harness.url, harness.prefix, most)
        await harness.start("w4")
        await until_balanced(harness, 4, JOIN_LIMIT)
        watching.cancel_scope.cancel()
    assert 0 < most[0] <= MAX_MOVING

    # kill -9: its accounts are CONNECTED elsewhere within lease_ttl + a claim interval
    # (+ slack for connecting them), and messages sent meanwhile all arrive.
    victim = harness.workers["w3"]
    orphans = set(victim.connected)
    async with anyio.create_task_group() as sending:
        sending.start_soon(sender.keep_sending, 20.0)
        await harness.kill("w3")
        killed = anyio.current_time()
        bound = LEASE_TTL + CLAIM_INTERVAL + SLACK
        await harness.until(lambda: orphans <= set(harness.connected()), bound + 30)
        recovered = anyio.current_time() - killed
        await anyio.sleep(0.5)  # some traffic after the recovery too
        sending.cancel_scope.cancel()
    assert recovered <= bound, f"took {recovered:.1f}s, bound {bound:.1f}s"
    await harness.until(lambda: set(sender.sent) <= set(harness.received()), 30)
    assert_one_link_per_key(mtproto_server)


async def test_a_paused_worker_and_a_partitioned_one_let_go_before_others_take_over(
    mtproto_server: MTProtoTestServer, fleet: tuple[FleetHarness, dict[str, TestUser]]
) -> None:
    harness, _ = fleet
    async with FaultProxy("127.0.0.1", PG_PORT) as db_link:
        for name in ("w1", "w2"):
            await harness.start(name)
        # w3 reaches PostgreSQL through a proxy that can cut it off alone.
        await harness.start("w3", url=PG_URL.replace(f":{PG_PORT}/", f":{db_link.port}/"))
        await harness.ready("w1", "w2", "w3")
        await until_balanced(harness, 3, START_LIMIT)

        # SIGSTOP past the lease: the others take its accounts; on SIGCONT it finds
        # its leases gone before it touches a link, then rejoins.
        paused = harness.workers["w2"]
        held = set(paused.connected)
        paused.signal(signal.SIGSTOP)
        await harness.until(lambda: held <= set(harness.connected(but=paused)), TAKEOVER_LIMIT)
        paused.signal(signal.SIGCONT)
        try:
            await harness.until(lambda: held <= {p[1] for p in paused.kinds("LOST")}, 30)
        except TimeoutError:
            kinds = collections.Counter(parts[0] for _, parts in paused.lines)
            raise AssertionError(
                f"paused worker printed {kinds}; last: {paused.lines[-5:]}"
            ) from None
        await until_balanced(harness, 3, SETTLE_LIMIT)
        assert_one_link_per_key(mtproto_server)

        # w3 alone loses the database for longer than a lease: it drops its links
        # before the others can claim them, they do, and it rejoins once healed.
        cut = harness.workers["w3"]
        held = set(cut.connected)
        db_link.blackhole()
        await harness.until(lambda: held <= set(harness.connected(but=cut)), TAKEOVER_LIMIT)
        assert not cut.connected & held
        db_link.heal()
        await until_balanced(harness, 3, SETTLE_LIMIT + LEASE_TTL)
    assert_one_link_per_key(mtproto_server)


async def test_a_rolling_restart_of_every_worker_loses_no_message_and_no_key_runs_twice(
    mtproto_server: MTProtoTestServer, fleet: tuple[FleetHarness, dict[str, TestUser]]
) -> None:
    harness, users = fleet
    sender = Sender(mtproto_server, users)
    for name in ("w1", "w2", "w3"):
        await harness.start(name)
    await harness.ready("w1", "w2", "w3")
    await until_balanced(harness, 3, START_LIMIT)
    async with anyio.create_task_group() as sending:
        sending.start_soon(sender.keep_sending, 20.0)
        for old, new in (("w1", "w1b"), ("w2", "w2b"), ("w3", "w3b")):
            assert await harness.stop(old) == 0  # SIGTERM: drains, exits 0
            await harness.start(new)
            await until_balanced(harness, 3, SETTLE_LIMIT)
        sending.cancel_scope.cancel()
    with contextlib.suppress(TimeoutError):
        await harness.until(lambda: set(sender.sent) <= set(harness.received()), 30)
    missing = sorted(set(sender.sent) - set(harness.received()))
    assert not missing, harness.story(missing)
    assert len(sender.sent) > 100
    assert_one_link_per_key(mtproto_server)
