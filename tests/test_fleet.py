"""Fleet in one process: several workers (Fleet instances) over one real database and
the real test server. The multi-process faults are in test_fleet_process.py."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telethon import events

from resilient_tg import ConnectionState, FleetError
from resilient_tg.fleet import AccountStatus, Fleet, FleetAdmin, FleetEvent
from resilient_tg.stores import SQLStore
from resilient_tg.testing import MTProtoTestServer

from .conftest import wait_until
from .fleettools import (
    FLEET_INTERVAL,
    FLEET_KEEPALIVE,
    FLEET_RECONNECT,
    FLEET_TTL,
    database_url,
    drop_fleet_tables,
    seed_accounts,
    unique_prefix,
)

pytestmark = pytest.mark.anyio

LIMIT = 30.0


@pytest.fixture(params=["postgresql", "sqlite"])
async def fleet_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    url = database_url(str(request.param), tmp_path)
    prefix = unique_prefix()
    yield url, prefix
    await drop_fleet_tables(url, prefix)


def make_fleet(server: MTProtoTestServer, url: str, prefix: str, **kwargs: Any) -> Fleet:
    kwargs.setdefault("lease_ttl", FLEET_TTL)
    kwargs.setdefault("claim_interval", FLEET_INTERVAL)
    return Fleet(
        url,
        server.api_id,
        server.api_hash,
        table_prefix=prefix,
        keepalive=FLEET_KEEPALIVE,
        reconnect=FLEET_RECONNECT,
        **kwargs,
    )


def connected(fleet: Fleet) -> set[str]:
    return {n for n, c in fleet.accounts.items() if c.state is ConnectionState.CONNECTED}


async def test_two_workers_split_the_accounts_and_each_account_runs_once(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    await seed_accounts(mtproto_server, url, prefix, 10)
    async with (
        make_fleet(mtproto_server, url, prefix) as a,
        make_fleet(mtproto_server, url, prefix) as b,
    ):
        # a starts first and claims all ten; b's arrival makes a hand five over.
        await wait_until(lambda: len(connected(a)) == 5 and len(connected(b)) == 5, LIMIT)
        assert not set(a.accounts) & set(b.accounts)
        health = a.health().to_dict()
        assert health["healthy"] is True
        assert health["live_workers"] == 2
        assert health["total_accounts"] == 10
        assert health["target"] == 5
    assert mtproto_server.max_links_per_key() == 1


async def test_handlers_learn_the_account_and_each_message_reaches_one_handler_once(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    users = await seed_accounts(mtproto_server, url, prefix, 6)
    sender = mtproto_server.create_user("+19990000001", "Sender")
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    fleets = [make_fleet(mtproto_server, url, prefix) for _ in range(2)]
    for fleet in fleets:

        @fleet.on(events.NewMessage(incoming=True))
        async def on_message(event: Any) -> None:
            seen[(event.account, event.raw_text)] += 1

    async with fleets[0] as a, fleets[1] as b:
        await wait_until(lambda: len(connected(a)) == 3 and len(connected(b)) == 3, LIMIT)
        for name, user in users.items():
            await mtproto_server.send_message(sender.id, user.id, f"hello {name}")
        await wait_until(lambda: len(seen) == 6, LIMIT)
        # Give a duplicate every chance to show up: a round trip on every account.
        for fleet in (a, b):
            for client in fleet.accounts.values():
                await client.telegram.get_me()
    assert seen == collections.Counter({(name, f"hello {name}"): 1 for name in users})


async def test_a_draining_worker_hands_everything_to_the_other_with_callbacks(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    await seed_accounts(mtproto_server, url, prefix, 6)
    a = make_fleet(mtproto_server, url, prefix)
    events_seen: list[FleetEvent] = []
    for kind in ("claimed", "connected", "released"):
        getattr(a, f"on_{kind}")(events_seen.append)
    async with make_fleet(mtproto_server, url, prefix) as b:
        async with a:
            await wait_until(lambda: len(connected(a)) == 3 and len(connected(b)) == 3, LIMIT)
            mine = set(a.accounts)
        # a has drained: b takes its accounts at its next rounds.
        await wait_until(lambda: len(connected(b)) == 6, LIMIT)
    by_kind = collections.defaultdict(set)
    for event in events_seen:
        by_kind[event.kind].add(event.account)
        assert event.worker_id == a.worker_id
    assert by_kind["released"] == mine
    assert mine <= by_kind["claimed"]
    assert mine <= by_kind["connected"]
    assert mtproto_server.max_links_per_key() == 1


async def rounds_pass(fleets: list[Fleet], count: int = 3) -> None:
    """Wait until every fleet completed ``count`` more claim rounds."""
    marks = [f.health().rounds + count for f in fleets]
    await wait_until(
        lambda: all(f.health().rounds >= m for f, m in zip(fleets, marks, strict=True)), LIMIT
    )


async def test_auth_lost_parks_the_account_and_no_worker_claims_it_again(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    users = await seed_accounts(mtproto_server, url, prefix, 3)
    mtproto_server.revoke_auth_keys(users["acct-001"].id)
    lost: list[FleetEvent] = []
    a, b = make_fleet(mtproto_server, url, prefix), make_fleet(mtproto_server, url, prefix)
    for fleet in (a, b):
        fleet.on_lost(lost.append)
    async with a, b:
        await wait_until(lambda: len(connected(a)) + len(connected(b)) == 2, LIMIT)
        await wait_until(lambda: [e.account for e in lost] == ["acct-001"], LIMIT)
        await rounds_pass([a, b])
        assert "acct-001" not in set(a.accounts) | set(b.accounts)
        view = await a.db.view(FLEET_TTL)
        row = next(r for r in view.accounts if r.name == "acct-001")
        assert row.status is AccountStatus.AUTH_LOST
        assert "AUTH_KEY_UNREGISTERED" in row.reason
        assert a.health().total_accounts == 2
    assert "AUTH_KEY_UNREGISTERED" in lost[0].detail


async def test_a_removed_account_is_stopped_and_not_written_back(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    await seed_accounts(mtproto_server, url, prefix, 2)
    released: list[FleetEvent] = []
    a = make_fleet(mtproto_server, url, prefix)
    a.on_released(released.append)
    async with a:
        await wait_until(lambda: len(connected(a)) == 2, LIMIT)
        async with FleetAdmin(url, table_prefix=prefix) as admin:
            await admin.remove("acct-000")
        await wait_until(lambda: [e.account for e in released] == ["acct-000"], LIMIT)
        assert set(a.accounts) == {"acct-001"}
    # The stopped client's flush was fenced off: the session stays deleted.
    store = SQLStore(url, name="acct-000", table_prefix=prefix)
    try:
        assert await store.load() is None
    finally:
        await store.aclose()
    assert "removed" in released[0].detail


async def test_a_disabled_account_is_released_and_capacity_caps_a_worker(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    url, prefix = fleet_db
    await seed_accounts(mtproto_server, url, prefix, 5)
    small = make_fleet(mtproto_server, url, prefix, capacity=1)
    async with small, make_fleet(mtproto_server, url, prefix) as big:
        await wait_until(lambda: len(connected(small)) == 1 and len(connected(big)) == 4, LIMIT)
        name = next(iter(big.accounts))
        await big.db.set_status(name, AccountStatus.DISABLED, "operator says so")
        await wait_until(lambda: name not in big.accounts and len(connected(big)) == 3, LIMIT)
        await rounds_pass([small, big])
        assert name not in small.accounts
        assert big.health().total_accounts == 4


def test_the_lease_must_outlast_the_servers_disconnect_delay() -> None:
    with pytest.raises(ValueError, match="lease_ttl=2s is too short"):
        Fleet("sqlite:///x.db", 1, "h", lease_ttl=2, keepalive=FLEET_KEEPALIVE)
    with pytest.raises(ValueError, match="claim_interval=5s must be at most lease_ttl/3"):
        Fleet("sqlite:///x.db", 1, "h", lease_ttl=12, claim_interval=5, keepalive=FLEET_KEEPALIVE)
    with pytest.raises(TypeError, match="holder"):
        Fleet("sqlite:///x.db", 1, "h", holder="me")
    Fleet("sqlite:///x.db", 1, "h")  # the defaults fit: 30 s against 10 s


async def test_sqlite_is_refused_when_workers_run_on_two_hosts(
    mtproto_server: MTProtoTestServer, tmp_path: Path
) -> None:
    url, prefix = database_url("sqlite", tmp_path), unique_prefix()
    await seed_accounts(mtproto_server, url, prefix, 1)
    elsewhere = make_fleet(mtproto_server, url, prefix)
    await elsewhere.db.heartbeat(
        "other-host:1:x",
        host="other-host",
        pid=1,
        started_at=0.0,
        capacity=None,
        running=0,
        draining=False,
    )
    with pytest.raises(FleetError, match="SQLite cannot be shared between hosts"):
        async with make_fleet(mtproto_server, url, prefix):
            pass
    await elsewhere.base_store.aclose()


async def test_metrics_show_the_worker_its_accounts_and_each_accounts_client(
    mtproto_server: MTProtoTestServer, fleet_db: tuple[str, str]
) -> None:
    import prometheus_client

    from resilient_tg.metrics import instrument_fleet

    url, prefix = fleet_db
    await seed_accounts(mtproto_server, url, prefix, 2)
    registry = prometheus_client.CollectorRegistry()
    fleet = make_fleet(mtproto_server, url, prefix, worker_id="metrics-worker")
    instrument_fleet(fleet, registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    async with fleet:
        await wait_until(lambda: len(connected(fleet)) == 2, LIMIT)
        await wait_until(lambda: value("resilient_tg_connected", client="acct-001") == 1.0, LIMIT)
        assert value("resilient_tg_fleet_accounts", worker="metrics-worker") == 2.0
        assert value("resilient_tg_fleet_healthy", worker="metrics-worker") == 1.0
        assert value("resilient_tg_fleet_total_accounts", worker="metrics-worker") == 2.0
        assert (
            value(
                "resilient_tg_fleet_accounts_by_state", worker="metrics-worker", state="connected"
            )
            == 2.0
        )
        assert (
            value("resilient_tg_fleet_events_total", worker="metrics-worker", kind="claimed") == 2.0
        )
    # Drained: both released, and their client series are gone.
    assert value("resilient_tg_fleet_events_total", worker="metrics-worker", kind="released") == 2.0
    assert value("resilient_tg_connected", client="acct-000") is None
