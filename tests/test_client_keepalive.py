"""The keepalive: true numbers per link, connect attempts named as attempts, and a
stalled event loop never taken for a silent peer."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from resilient_tg import (
    ConnectionState,
    KeepalivePolicy,
    ReconnectPolicy,
    StateChange,
    StateReason,
)
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import running, seeded_store
from .conftest import wait_until

pytestmark = pytest.mark.anyio

S = ConnectionState
SECONDS = re.compile(r"(\d+\.\d+)s")


class PongTimes:
    """An internal listener that notes when each pong came (wall clock)."""

    def __init__(self, into: list[float], event: asyncio.Event | None = None) -> None:
        self.into = into
        self.event = event

    def on_transition(self, change: StateChange) -> None:
        pass

    def on_pong(self, rtt: float) -> None:
        self.into.append(time.time())
        if self.event is not None:
            self.event.set()

    def on_save(self, duration: float, error: BaseException | None) -> None:
        pass


def _seconds(detail: str) -> float:
    match = SECONDS.search(detail)
    assert match is not None, detail
    return float(match.group(1))


async def test_a_blocking_sync_callback_is_named_and_costs_no_link(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A 3 s time.sleep in on_connected while a ping is out: the keepalive tells the
    stalled loop from a silent peer, and the WARNING names the callback."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    # Round trips of 0.6 s against a 0.5 s interval: the next ping goes out as soon as a
    # pong comes, so one is out when the loop stalls, and the stall overruns its 2.9 s
    # timeout. interval + timeout = 3.4 s exceeds the stall, so the server's
    # ping_delay_disconnect (4 s) keeps the link on its side too.
    keepalive = KeepalivePolicy(interval=0.5, timeout=2.9)
    fault_proxy.latency(0.3)
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    pongs: list[float] = []
    pong = asyncio.Event()
    stalled: list[float] = []

    async def wait_for_a_ping_out(change: StateChange) -> None:
        # Callbacks run in order: this one holds the next until a ping is surely out.
        pong.clear()
        await pong.wait()
        await asyncio.sleep(0.1)

    def block_the_loop(change: StateChange) -> None:
        time.sleep(3.0)
        stalled.append(time.time())

    reconnect = ReconnectPolicy(initial_delay=0.05, max_delay=0.3, connect_timeout=10.0)
    with caplog.at_level(logging.INFO, logger="resilient_tg"):
        async with running(store, mtproto_server, keepalive=keepalive, reconnect=reconnect) as (
            client,
            rec,
        ):
            client._add_listener(PongTimes(pongs, pong))
            client.on_connected(wait_for_a_ping_out)
            client.on_connected(block_the_loop)
            await client.wait_connected(20)
            await wait_until(lambda: bool(stalled))
            # Two more pongs after the stall: the keepalive carried on, on the same link.
            await wait_until(lambda: len([at for at in pongs if at > stalled[0]]) >= 2)
            assert S.RECONNECTING not in rec.states()
            assert client.health().reconnects_total == 0
            assert fault_proxy.links_total == 1
            assert mtproto_server.links_total == 1
            assert client.state is S.CONNECTED
    messages = [r.getMessage() for r in caplog.records]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "blocked the event loop" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "on_connected callback" in warnings[0]
    assert "block_the_loop" in warnings[0]
    assert 2.9 <= _seconds(warnings[0]) < 4.0
    assert any("event loop stalled" in m for m in messages)  # the stall hit a pong wait
    assert not [m for m in messages if "keepalive timeout" in m]


async def test_keepalive_numbers_cover_the_current_link_and_attempts_are_attempts(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Blackhole, reconnect, blackhole again for several attempts: every number in the
    details measures one link, and attempts into the black hole are attempts."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    keepalive = KeepalivePolicy(interval=0.5, timeout=0.5)
    slack = 0.5
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    pongs: list[float] = []
    with caplog.at_level(logging.INFO, logger="resilient_tg"):
        async with running(store, mtproto_server, keepalive=keepalive) as (client, rec):
            client._add_listener(PongTimes(pongs))
            await client.wait_connected(10)
            fault_proxy.blackhole()
            await rec.until(lambda: any(c.old is S.CONNECTED for c in rec.changes))
            fault_proxy.heal()
            await client.wait_connected(10)
            mtproto_server.clear_requests()
            reconnected = len(rec.changes)
            # Up for longer than the detection bound, then a second black hole in which
            # the proxy accepts every new connect: the attempts time out one by one.
            await wait_until(
                lambda: (
                    (client.health().last_pong_at or 0) > time.time() - 0.1
                    and client.health().since < time.time() - 2 * keepalive.detection_bound
                )
            )
            links = fault_proxy.links_total
            fault_proxy.blackhole()
            await rec.until(lambda: fault_proxy.links_total >= links + 3)
            fault_proxy.heal()
            await client.wait_connected(10)
            await rec.until(lambda: rec.changes[-1].new is S.CONNECTED)
            await wait_until(lambda: bool(pongs) and pongs[-1] > rec.changes[-1].at)
    second = rec.changes[reconnected:]
    losses = [c for c in second if c.new is S.RECONNECTING]
    assert losses[0].old is S.CONNECTED
    assert losses[0].reason is StateReason.KEEPALIVE_TIMEOUT
    assert losses[0].detail.startswith("link lost: keepalive timeout after")
    assert _seconds(losses[0].detail) <= keepalive.detection_bound + slack
    attempts = losses[1:]
    for change in attempts:
        assert change.old is S.CONNECTING
        assert change.detail.startswith("connect attempt ")
    # (heal() may reset the last attempt's link: that one ends with RESET.)
    unanswered = [c for c in attempts if c.reason is StateReason.CONNECT_TIMEOUT]
    assert len(unanswered) >= 2
    for change in unanswered:
        assert re.match(r"connect attempt \d+: no answer within \d+\.\ds$", change.detail)
        assert _seconds(change.detail) <= keepalive.timeout + slack
    lines = [r.getMessage() for r in caplog.records if r.name == "resilient_tg.client"]
    # Two links were lost (one per black hole); every other failure was an attempt.
    assert sum(line.startswith("link lost") for line in lines) == 2
    attempt_lines = [line for line in lines if re.match(r"connect attempt \d+: no answer", line)]
    assert len(attempt_lines) == sum(c.reason is StateReason.CONNECT_TIMEOUT for c in rec.changes)
    # The link that came up after the second black hole was pinged from its start.
    up = next(c for c in reversed(rec.changes) if c.new is S.CONNECTING)
    first_pong = min(at for at in pongs if at > up.at)
    assert first_pong - up.at <= keepalive.interval + slack


async def test_a_link_is_covered_by_the_servers_timer_from_its_first_request(
    mtproto_server: MTProtoTestServer,
) -> None:
    """The first message of every link asks the server to close it after the keepalive's
    disconnect_delay of silence. A process paused or cut off after its first requests
    but before its first regular ping (sent once connect() has finished) would otherwise
    leave the link open on the server for as long as the pause lasts, while another
    process takes the session over once the lease expires: two links with one key.

    A fresh process's first message is refused for its salt (Telethon keeps none across
    restarts) and sent again with initConnection one round trip later: the test pauses
    the client right after the server took that initConnection."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with FaultProxy(mtproto_server.host, mtproto_server.port) as proxy:
        proxy.latency(1.0)  # each answer comes 2 s after its request
        store = seeded_store(mtproto_server, proxy.port, user=alice)
        mtproto_server.clear_requests()

        def open_links() -> int:
            return sum(c.open for c in mtproto_server.link_counts().values())

        async with running(store, mtproto_server) as (client, _):
            await wait_until(lambda: bool(mtproto_server.requests_for("help.getConfig")), 20)
            assert open_links() == 1
            assert client.state is not ConnectionState.CONNECTED  # no answer is back yet
            proxy.blackhole()  # the client goes silent, as if paused
            silenced = time.monotonic()
            await wait_until(lambda: open_links() == 0, 20)
            closed_after = time.monotonic() - silenced
    assert closed_after <= client.keepalive_policy.disconnect_delay + 2.0, closed_after
