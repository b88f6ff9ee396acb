"""ResilientClient against MTProtoTestServer and FaultProxy, with the real Telethon."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from typing import Any

import anyio
import pytest
from telethon.tl import functions, types

from resilient_tg import (
    AuthLostError,
    ConnectionState,
    KeepalivePolicy,
    NotConnectedError,
    ReconnectPolicy,
    ResilientClient,
    ResultLostError,
    ResultUnknownError,
    StateChange,
    StateReason,
    _compat,
)
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import (
    FAST_KEEPALIVE,
    FAST_RECONNECT,
    empty_store,
    log_in,
    running,
    seeded_store,
)

pytestmark = pytest.mark.anyio

S = ConnectionState


async def test_fresh_session_connects_creates_a_key_and_stores_it(
    mtproto_server: MTProtoTestServer,
) -> None:
    store = empty_store(mtproto_server)
    async with running(store, mtproto_server) as (client, rec):
        assert client.state in (S.CONNECTING, S.IDLE, S.CONNECTED)
        await client.wait_connected(10)
        # Not logged in: CONNECTED, but not healthy, and says why.
        health = client.health()
        assert health.state is S.CONNECTED
        assert health.authorized is False
        assert health.healthy is False
        data = await store.load()
        assert data is not None
        assert data.auth_key is not None  # durable before CONNECTED was reported
        assert len(data.auth_key) == 256
    assert rec.states()[0] is S.CONNECTING
    assert rec.states()[-2:] == [S.CONNECTED, S.CLOSED]


async def test_login_through_the_client_then_healthy(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with running(empty_store(mtproto_server), mtproto_server) as (client, rec):
        await client.wait_connected(10)
        await log_in(client, mtproto_server, alice)
        await rec.until(lambda: client.health().healthy)
        health = client.health()
        assert health.authorized is True
        assert health.rtt is not None
        assert health.rtt < 1.0
        json.dumps(health.to_dict())  # JSON-ready


async def test_authorized_session_catches_up_before_connected(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with running(seeded_store(mtproto_server, user=alice), mtproto_server) as (client, rec):
        await client.wait_connected(10)
    assert rec.states() == [S.CONNECTING, S.CATCHING_UP, S.CONNECTED, S.CLOSED]


async def test_telethon_arguments_owned_by_a_policy_are_refused(
    mtproto_server: MTProtoTestServer,
) -> None:
    for name, field in [
        ("connection_retries", "ReconnectPolicy.max_attempts"),
        ("retry_delay", "ReconnectPolicy.initial_delay"),
        ("auto_reconnect", "ReconnectPolicy"),
        ("timeout", "ReconnectPolicy.connect_timeout"),
        ("catch_up", "ResilientClient"),
        ("request_retries", "request_timeout"),
    ]:
        with pytest.raises(TypeError, match=f"'{name}'.*{field}"):
            ResilientClient(MemoryStore(), 1, "hash", **{name: 1})


async def test_entering_twice_is_refused(mtproto_server: MTProtoTestServer) -> None:
    client = ResilientClient(empty_store(mtproto_server), mtproto_server.api_id, "x" * 32)
    async with client:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with client:
            pass


async def test_blackholed_link_is_detected_within_interval_plus_timeout(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    keepalive = KeepalivePolicy(interval=0.5, timeout=0.5)
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, keepalive=keepalive) as (client, rec):
        await client.wait_connected(10)
        await rec.until(lambda: client.health().healthy)
        started = time.monotonic()
        fault_proxy.blackhole()
        left = await rec.left(S.CONNECTED, limit=10)
        detected = left - started
        # interval + timeout, plus a margin for a loaded machine.
        assert detected <= keepalive.detection_bound + 0.5
        loss = next(c for c in rec.changes if c.old is S.CONNECTED)
        assert loss.new is S.RECONNECTING
        assert loss.reason is StateReason.KEEPALIVE_TIMEOUT
        assert client.health().healthy is False
        fault_proxy.heal()
        await client.wait_connected(10)
        await rec.until(lambda: client.health().healthy)


async def test_fifty_failed_attempts_then_heal_connects(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Never gives up: 50 refused attempts in a row, then the network is back."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    # Refused attempts are paced by probe_delay (0.5 s by default: 50 of them would take
    # ~19 s); scaled down, as the backoff is.
    reconnect = ReconnectPolicy(
        initial_delay=0.005, max_delay=0.02, connect_timeout=3.0, probe_delay=0.04
    )
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, reconnect=reconnect) as (client, rec):
        await client.wait_connected(10)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.until(
            lambda: sum(1 for c in rec.changes if c.reason is StateReason.REFUSED) >= 50, limit=30
        )
        assert client.state in (S.RECONNECTING, S.CONNECTING)
        assert client.health().attempt >= 50
        fault_proxy.heal()
        await client.wait_connected(10)
        assert client.health().attempt == 0


async def test_a_short_refusal_outage_costs_at_most_about_its_own_length_again(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Refused connects fail at once and climb the backoff exponent fast; the delay is
    capped by the outage's age, so the client is back within ~2 x the outage."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    reconnect = ReconnectPolicy(initial_delay=0.05, max_delay=30.0, connect_timeout=3.0)
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    outage = 1.5
    async with running(store, mtproto_server, reconnect=reconnect) as (client, rec):
        await client.wait_connected(10)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        started = time.monotonic()
        await anyio.sleep(outage)  # the outage itself: nothing to await but time
        fault_proxy.heal()
        healed = time.monotonic()
        await client.wait_connected(outage + 3.0)  # the cap (1.5 s) + connect + margin
        back = time.monotonic() - healed
        retries = [c for c in rec.changes if c.new is S.RECONNECTING]
        assert len(retries) >= 5  # the exponent alone would allow 0.05 * 2**4 s and more
        for change in retries:
            assert change.next_delay is not None
            age = change.at - (time.time() - (time.monotonic() - started))
            assert change.next_delay <= max(reconnect.initial_delay, age) + 0.05
        assert back <= outage + 3.0


async def test_gives_up_after_max_attempts_and_says_so(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    reconnect = FAST_RECONNECT.evolve(max_attempts=3)
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, reconnect=reconnect, request_timeout=5) as (
        client,
        rec,
    ):
        await client.wait_connected(10)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.state(S.GAVE_UP)
        with pytest.raises(NotConnectedError, match="gave_up"):
            await client.wait_connected(1)
        with pytest.raises(NotConnectedError):
            await client.telegram.get_me()
        assert "max_attempts=3" in client.health().detail
    assert client.state is S.GAVE_UP  # leaving does not hide why it stopped


async def test_request_during_outage_completes_after_reconnect(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        request = asyncio.ensure_future(client.telegram.get_me())
        done, _ = await asyncio.wait([request], timeout=0.5)
        assert not done  # waiting for the link, not failing
        fault_proxy.heal()
        me = await asyncio.wait_for(request, 10)
        assert me.id == alice.id


async def test_request_fails_with_not_connected_after_request_timeout(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, request_timeout=1.0) as (client, rec):
        await client.wait_connected(10)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        started = time.monotonic()
        with pytest.raises(NotConnectedError, match=r"request_timeout=1\.0s") as info:
            await client.telegram(functions.updates.GetStateRequest())
        assert 0.9 <= time.monotonic() - started < 3.0
        assert isinstance(info.value, ConnectionError)  # code that handles network errors works
        # A black-holed link: the request is sent, no answer comes; still bounded, and
        # the caller is told it may have taken effect (ResultUnknownError, tests/test_requests).
        fault_proxy.heal()
        await client.wait_connected(10)
        fault_proxy.blackhole()
        with pytest.raises(ResultUnknownError):
            await client.telegram(functions.updates.GetStateRequest())
        fault_proxy.heal()
        await client.wait_connected(10)


async def test_resent_send_refused_as_duplicate_is_result_lost_never_a_second_message(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    # A slow keepalive: with 1 s of latency each way, a fast one would kill the link
    # before the request even reaches the server.
    slow = KeepalivePolicy(interval=10.0, timeout=10.0)
    async with running(store, mtproto_server, keepalive=slow) as (client, rec):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)
        # Slow the answers down, and kill the link once the server has the request:
        # the answer (1 s away) is lost, Telethon re-sends on the new link, the server
        # refuses the repeat.
        fault_proxy.latency(1.0)
        send = asyncio.ensure_future(client.telegram.send_message(peer, "exactly once"))
        await rec.until(lambda: len(mtproto_server.requests_for("messages.sendMessage")) == 1)
        fault_proxy.reset()
        fault_proxy.heal()
        with pytest.raises(ResultLostError, match="took effect on the server"):
            await asyncio.wait_for(send, 10)
        history = await client.telegram.get_messages(peer, limit=10)
        assert [m.text for m in history] == ["exactly once"]
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 2


async def test_revoked_key_is_auth_lost_and_the_store_is_left_untouched(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    lost: list[StateChange] = []
    async with running(store, mtproto_server) as (client, rec):
        client.on_auth_lost(lost.append)
        await client.wait_connected(10)
        await asyncio.sleep(1.5)  # let a periodic flush happen
        saved = await store.load()
        saves = store.saves
        mtproto_server.revoke_auth_keys(alice.id)
        fault_proxy.reset()  # the probe after the reconnect finds out
        await rec.state(S.AUTH_LOST)
        with pytest.raises(AuthLostError, match="AUTH_KEY_UNREGISTERED"):
            await client.wait_connected(1)
        with pytest.raises(AuthLostError):
            await client.telegram.get_me()
        assert client.health().healthy is False
    assert [c.new for c in lost] == [S.AUTH_LOST]
    assert client.state is S.AUTH_LOST
    assert store.saves == saves
    assert await store.load() == saved


async def test_server_restart_without_state_is_auth_lost(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        await mtproto_server.restart()  # forgets every key: the next message gets -404
        await rec.state(S.AUTH_LOST)
        assert "-404" in client.health().detail


async def test_never_authorized_key_unknown_to_the_server_is_replaced(
    mtproto_server: MTProtoTestServer,
) -> None:
    store = empty_store(mtproto_server)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        first = (await store.load()).auth_key  # type: ignore[union-attr]
        await mtproto_server.restart()
        await rec.until(lambda: sum(1 for s in rec.states() if s is S.CONNECTED) >= 2)
        second = (await store.load()).auth_key  # type: ignore[union-attr]
        assert second is not None
        assert second != first
        assert client.health().authorized is False


async def test_flood_wait_on_reconnect_is_honoured(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        mtproto_server.inject_rpc_error("updates.getState", "FLOOD_WAIT_2")
        fault_proxy.reset()
        lost_at = await rec.left(S.CONNECTED)
        await client.wait_connected(10)
        assert time.monotonic() - lost_at >= 2.0
        assert client.health().healthy or client.state is S.CONNECTED


async def test_server_errors_during_reconnect_are_transient(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        mtproto_server.inject_rpc_error("updates.getState", "INTERNAL", times=3)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        await client.wait_connected(10)
        assert S.AUTH_LOST not in rec.states()


async def test_raising_callbacks_are_logged_and_never_stop_the_client(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    async with running(empty_store(mtproto_server), mtproto_server) as (client, rec):

        @client.on_state_change
        def broken(change: StateChange) -> None:
            calls.append("sync")
            raise RuntimeError("callback bug")

        @client.on_connected
        async def broken_async(change: StateChange) -> None:
            calls.append("async")
            raise ValueError("async callback bug")

        with caplog.at_level(logging.ERROR, logger="resilient_tg.client"):
            await client.wait_connected(10)
            await rec.until(lambda: "async" in calls)
    assert "sync" in calls
    assert any("callback" in r.getMessage() and "raised" in r.getMessage() for r in caplog.records)
    assert client.state is S.CLOSED


async def test_callbacks_fire_in_transition_order(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    seen: list[str] = []
    async with running(store, mtproto_server) as (client, rec):
        client.on_connected(lambda c: seen.append("connected"))
        client.on_disconnected(lambda c: seen.append(f"disconnected:{c.reason.value}"))
        client.on_reconnecting(lambda c: seen.append("reconnecting"))
        await client.wait_connected(10)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        await client.wait_connected(10)
        await rec.until(lambda: seen.count("connected") == 2)
    # Leaving is a disconnect too (reason USER).
    assert seen == [
        "connected",
        "disconnected:reset",
        "reconnecting",
        "connected",
        "disconnected:user",
    ]


async def test_leaving_releases_the_lease_and_leaks_no_tasks(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    before = set(asyncio.all_tasks())
    async with running(store, mtproto_server) as (client, _rec):
        await client.wait_connected(10)
        assert (await store.current_lease()) is not None
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftover == []
    assert await store.current_lease() is None


async def test_shutdown_is_bounded_even_on_a_black_holed_link(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, shutdown_timeout=2.0) as (client, _rec):
        await client.wait_connected(10)
        fault_proxy.blackhole()
        started = time.monotonic()
    assert time.monotonic() - started < 2.0 + 1.0
    fault_proxy.heal()


async def test_second_client_waits_for_the_lease(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    second = ResilientClient(store, mtproto_server.api_id, mtproto_server.api_hash)
    entered = asyncio.Event()

    async def run_second() -> None:
        async with second:
            entered.set()
            await second.wait_connected(10)

    async with running(store, mtproto_server, lease_ttl=3.0) as (first, rec):
        await first.wait_connected(10)
        task = asyncio.ensure_future(run_second())
        await rec.until(lambda: second.state is S.WAITING_LEASE)
        assert not entered.is_set()
        lease = second.health().lease
        assert lease is not None
        assert lease.holder == first.holder
        assert lease.ours is False
        assert second.health().detail == f"session leased to {first.holder}"
    released = time.monotonic()
    await asyncio.wait_for(entered.wait(), 5)
    assert time.monotonic() - released < 1.0  # taken over within a poll interval
    await asyncio.wait_for(task, 10)


async def test_a_lost_lease_drops_the_link_at_once(
    mtproto_server: MTProtoTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilient_tg import LeaseLostError

    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    stolen = {"now": False}
    original = store.renew_lease

    async def renew(holder: str, ttl: float) -> Any:
        if stolen["now"]:
            stolen["now"] = False
            raise LeaseLostError("taken over by another holder", store="memory://", holder=holder)
        return await original(holder, ttl)

    monkeypatch.setattr(store, "renew_lease", renew)
    async with running(store, mtproto_server, lease_ttl=0.6) as (client, rec):
        await client.wait_connected(10)
        links = mtproto_server.links_total
        stolen["now"] = True
        await rec.state(S.WAITING_LEASE)
        await client.wait_connected(10)  # the lease came back (no one else holds it)
        assert rec.states().count(S.WAITING_LEASE) == 1
        # The old link was dropped, not kept: the client is back on a new one.
        assert mtproto_server.links_total > links
        assert len(mtproto_server.connections) == 1


async def test_corrupt_store_fails_entering_with_our_error(
    mtproto_server: MTProtoTestServer,
) -> None:
    from resilient_tg import SessionCorruptError

    class Corrupt(MemoryStore):
        async def load(self) -> SessionData | None:
            raise SessionCorruptError("corrupt://x: truncated", store="corrupt://x")

    with pytest.raises(SessionCorruptError, match="truncated"):
        async with ResilientClient(Corrupt(), mtproto_server.api_id, mtproto_server.api_hash):
            pass


def test_telethon_internals_we_rely_on_exist() -> None:
    """Fails loudly when a Telethon release moves what _compat touches."""
    from telethon import TelegramClient
    from telethon.sessions import MemorySession

    client = TelegramClient(MemorySession(), 1, "x" * 32)
    _compat.check(client)
    assert _compat.local_pts(client) is None
    assert _compat.updates_error(client) is None

    class Fake:
        pass

    with pytest.raises(_compat.TelethonCompatError, match="lacks"):
        _compat.check(Fake())


async def test_keepalive_uses_ping_delay_disconnect(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with running(seeded_store(mtproto_server, user=alice), mtproto_server) as (client, rec):
        await client.wait_connected(10)
        await rec.until(lambda: client.health().last_pong_at is not None)
        # The server closes a link that stops pinging: this is what it was asked for.
        assert FAST_KEEPALIVE.disconnect_delay == 1
        first = mtproto_server.links_total
        await asyncio.sleep(2 * FAST_KEEPALIVE.interval + 0.2)
        assert mtproto_server.links_total == first  # our pings keep it open


async def test_a_clean_shutdown_logs_no_warning(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    with caplog.at_level(logging.WARNING):
        async with running(seeded_store(mtproto_server, user=alice), mtproto_server) as (
            client,
            _rec,
        ):
            await client.wait_connected(10)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("fast_path", [True, False], ids=["py311-timer", "py310-task"])
async def test_both_request_paths_time_out_and_complete_the_same_way(
    mtproto_server: MTProtoTestServer,
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    fast_path: bool,
) -> None:
    """The 3.11+ timer path and the 3.10 helper-task path behave alike."""
    from resilient_tg import _requests as gate_module

    monkeypatch.setattr(gate_module, "_CAN_TELL_CANCELLATIONS", fast_path)
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    slow = KeepalivePolicy(interval=10.0, timeout=10.0)
    async with running(store, mtproto_server, keepalive=slow, request_timeout=0.5) as (
        client,
        _rec,
    ):
        await client.wait_connected(10)
        assert (await client.telegram.get_me()).id == alice.id
        fault_proxy.blackhole()
        with pytest.raises(ResultUnknownError, match="request_timeout"):
            await client.telegram(functions.updates.GetStateRequest())
        # An outer cancellation still cancels (it is not turned into an error).
        pending = asyncio.ensure_future(client.telegram(functions.updates.GetStateRequest()))
        await asyncio.sleep(0.1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        fault_proxy.heal()


def test_one_connection_class_per_transport_and_plain_outside_the_supervisor() -> None:
    """Connections Telethon builds for other DCs (file transfers) must not drive our
    state machine; and a fleet shares one class per transport."""
    import logging as _logging

    from telethon.network import ConnectionTcpAbridged, ConnectionTcpFull

    from resilient_tg._connection import current_observer, make_connection_class

    full = make_connection_class(None)
    assert full is make_connection_class(ConnectionTcpFull)
    assert make_connection_class(ConnectionTcpAbridged) is not full
    loggers: Any = collections.defaultdict(lambda: _logging.getLogger("test"))
    plain = full("127.0.0.1", 1, 2, loggers=loggers)
    assert plain._rtg_observer is None

    class Observer:
        pass

    observer: Any = Observer()
    token = current_observer.set(observer)
    try:
        observed = full("127.0.0.1", 1, 2, loggers=loggers)
    finally:
        current_observer.reset(token)
    assert observed._rtg_observer is observer
    with pytest.raises(TypeError, match="Telethon Connection class"):
        make_connection_class(dict)
