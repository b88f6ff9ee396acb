"""How fast a client is back after a fault, against the real server behind a FaultProxy.

Recovery is measured as the issue's benchmarks measure it: from the fault (a reset) or
the heal (an outage) to the first successful request. The bounds carry a margin for a
loaded CI machine; what each test pins is the rule behind the number (cheap attempts
within probe_delay, no backoff growth, no herd delay for a lone client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from resilient_tg import (
    ConnectionState,
    KeepalivePolicy,
    ReconnectPolicy,
    ResilientClient,
    StateChange,
    StateReason,
)
from resilient_tg._scheduler import MAX_GAP
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import Recorder, running, seeded_store

pytestmark = pytest.mark.anyio

S = ConnectionState
# Slack for a loaded machine on top of what the policy allows.
MARGIN = 1.5
# The count an INFO line about cheap attempts carries.
COUNT = re.compile(r"\((\d+) in this outage did not reach the server\)")


async def timed_request(client: ResilientClient, since: float, limit: float = 20.0) -> float:
    """Seconds from ``since`` (monotonic) to the answer of a request sent now."""
    with anyio.fail_after(limit):
        me = await client.telegram.get_me()
    assert me is not None
    return time.monotonic() - since


def after(rec: Recorder, mark: int) -> list[StateChange]:
    return rec.changes[mark:]


async def test_after_a_refusal_outage_the_client_is_back_within_probe_delay(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Refused connects never reached the server: they are retried at most probe_delay
    apart however long the outage, so the exponential backoff (which would have reached
    seconds by now) does not delay the comeback."""
    # jitter="none": every cheap wait is exactly probe_delay (the worst case for the
    # comeback) and a growing exponent would show in the very next delay.
    policy = ReconnectPolicy(jitter="none")
    assert policy.probe_delay == 0.5
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, reconnect=policy) as (client, rec):
        attempts: list[StateChange] = []
        client.on_reconnecting(attempts.append)
        await client.wait_connected(10)
        mark = len(rec.changes)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()

        def refused() -> list[StateChange]:
            return [
                c
                for c in after(rec, mark)
                if c.new is S.RECONNECTING and c.reason is StateReason.REFUSED
            ]

        # Seven refused attempts: ~2.8 s of outage, where the old backoff would have
        # waited 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s.
        await rec.until(lambda: len(refused()) >= 7, limit=15)
        healed = time.monotonic()
        fault_proxy.heal()
        back = await timed_request(client, healed)
        await rec.state(S.CONNECTED)

    delays = [c.next_delay for c in refused()]
    assert all(d is not None and d <= policy.probe_delay for d in delays), delays
    # Past the first probe_delay of the outage every wait is probe_delay itself.
    assert delays[-3:] == [policy.probe_delay] * 3
    assert len(attempts) >= len(delays)  # on_reconnecting before every attempt
    assert back <= policy.probe_delay + MARGIN, f"back {back:.2f}s after the heal"


async def test_a_lone_reset_reconnects_at_once(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """A reset of a lone client's link: the first attempt waits delay(1) (at most
    initial_delay) and nothing more, and the first request is answered soon after."""
    policy = ReconnectPolicy()
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, reconnect=policy) as (client, rec):
        await client.wait_connected(10)
        mark = len(rec.changes)
        reset = time.monotonic()
        fault_proxy.reset()
        back = await timed_request(client, reset)
        await rec.until(lambda: S.CONNECTED in [c.new for c in after(rec, mark)])

    changes = after(rec, mark)
    lost = changes[0]
    assert (lost.old, lost.new, lost.reason) == (S.CONNECTED, S.RECONNECTING, StateReason.RESET)
    assert lost.next_delay is not None
    assert 0 <= lost.next_delay <= policy.initial_delay
    attempt = changes[1]
    assert attempt.new is S.CONNECTING
    # No herd: the attempt starts when the policy's delay is over, not later.
    assert attempt.at - lost.at <= lost.next_delay + 0.3
    assert [c.new for c in changes[2:4]] == [S.CATCHING_UP, S.CONNECTED]  # one attempt
    assert back <= policy.initial_delay + 1.0, f"back {back:.2f}s after the reset"


async def first_outcome(rec: Recorder, mark: int, limit: float) -> StateChange:
    """The first CONNECTED or RECONNECTING after ``mark``: did the attempt succeed?"""
    ends = (S.CONNECTED, S.RECONNECTING)
    await rec.until(lambda: any(c.new in ends for c in after(rec, mark)), limit)
    return next(c for c in after(rec, mark) if c.new in ends)


async def test_a_reconnect_over_a_link_with_two_seconds_of_latency_succeeds_at_once(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """2 s each way (4 s round trips; connect, probe and catch-up take one each): slow,
    not dead. The default policy gives no attempt up as silent or timed out."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(
        store, mtproto_server, reconnect=ReconnectPolicy(), keepalive=KeepalivePolicy()
    ) as (client, rec):
        await client.wait_connected(10)
        fault_proxy.latency(2.0)
        mark = len(rec.changes)
        fault_proxy.reset()
        # The attempt over the slow link starts with its CONNECTING.
        await rec.until(lambda: S.CONNECTING in [c.new for c in after(rec, mark)])
        mark += [c.new for c in after(rec, mark)].index(S.CONNECTING)
        outcome = await first_outcome(rec, mark, limit=40)
    assert outcome.new is S.CONNECTED, (outcome.reason, outcome.detail)


async def test_a_first_connect_over_a_link_with_two_seconds_of_latency_succeeds_at_once(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """A session with a key but nothing else yet (no server salt, no update state):
    Telethon's connect() takes three round trips (bad_server_salt, initConnection, then
    get_me), 12 s at 2 s each way. The first attempt must not be cut off by the
    default connect_timeout."""
    fault_proxy.latency(2.0)
    store = seeded_store(mtproto_server, fault_proxy.port)  # a key, not logged in
    async with running(
        store, mtproto_server, reconnect=ReconnectPolicy(), keepalive=KeepalivePolicy()
    ) as (_client, rec):
        outcome = await first_outcome(rec, 0, limit=40)
    assert outcome.new is S.CONNECTED, (outcome.reason, outcome.detail)


async def test_info_lines_of_cheap_attempts_are_rate_limited(
    mtproto_server: MTProtoTestServer,
    fault_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many refused attempts: INFO only at the 1st, 2nd, 4th, 8th, 16th... with the count
    (the rest at DEBUG), while on_reconnecting still fires before every attempt."""
    caplog.set_level(logging.DEBUG, logger="resilient_tg")
    # Scaled down: a cheap attempt every 50 ms, so 20 of them take a second.
    policy = ReconnectPolicy(initial_delay=0.05, probe_delay=0.05, jitter="none")
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, reconnect=policy) as (client, rec):
        attempts: list[StateChange] = []
        client.on_reconnecting(attempts.append)
        await client.wait_connected(10)
        mark = len(rec.changes)
        first_record = len(caplog.records)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()

        def reconnecting() -> list[StateChange]:
            return [c for c in after(rec, mark) if c.new is S.RECONNECTING]

        await rec.until(lambda: len(reconnecting()) >= 20, limit=15)
        cheap = len(reconnecting()) - 1  # the first one is the lost link itself
        outage = [
            r
            for r in caplog.records[first_record:]
            if r.name.startswith("resilient_tg") and not r.name.startswith("resilient_tg.testing")
        ]
        fault_proxy.heal()
        await client.wait_connected(10)
        await rec.until(lambda: len(attempts) == len(reconnecting()))

    powers = [2**k for k in range(cheap.bit_length())]  # 1, 2, 4... up to cheap
    info = [r.getMessage() for r in outage if r.levelno >= logging.INFO]
    counts = [int(m.group(1)) for line in info if (m := COUNT.search(line))]
    assert counts == powers, "\n".join(info)
    # The INFO lines of the whole outage: the lost link (and at most one line for the
    # attempt after it), then one per power of two, not one or two per attempt.
    assert len(info) <= 2 + len(powers), "\n".join(info)
    quiet = [r for r in outage if r.levelno == logging.DEBUG and "reconnecting in" in r.message]
    assert len(quiet) == cheap - len(powers)
    # on_reconnecting: one call per attempt, cheap ones included, numbered in order.
    assert len(attempts) == len(reconnecting())
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))


# A herd in one process -------------------------------------------------------------------

HERD = 40


@contextlib.asynccontextmanager
async def fleet(
    server: MTProtoTestServer, proxy: FaultProxy, n: int, policy: ReconnectPolicy
) -> AsyncIterator[list[ResilientClient]]:
    """``n`` clients, each on a session of its own, all behind ``proxy``."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(n):
            user = server.create_user(f"+1556{i:07d}", f"Herd{i}")
            client = ResilientClient(
                seeded_store(server, proxy.port, user=user),
                server.api_id,
                server.api_hash,
                reconnect=policy,
                keepalive=KeepalivePolicy(),  # default: 40 clients pinging fast is load
                shutdown_timeout=5.0,
            )
            clients.append(await stack.enter_async_context(client))
        yield clients


async def test_a_herd_in_one_process_is_spread_and_a_lone_client_is_not_delayed(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """All links of a fleet drop at once: the process's scheduler spaces the attempts
    (here nothing else does: no jitter, so every one falls due in the same instant), yet
    every client is back within a bound; a lone client of the same process, on a link
    of its own, reconnects without waiting for anyone."""
    policy = ReconnectPolicy(jitter="none")
    async with (
        FaultProxy(mtproto_server.host, mtproto_server.port) as lone_proxy,
        fleet(mtproto_server, fault_proxy, HERD, policy) as clients,
    ):
        alice = mtproto_server.create_user("+15550001", "Alice")
        lone_store = seeded_store(mtproto_server, lone_proxy.port, user=alice)
        async with running(lone_store, mtproto_server, reconnect=policy) as (lone, lone_rec):
            with anyio.fail_after(60):
                await asyncio.gather(*(c.wait_connected() for c in clients))
                await lone.wait_connected()
            attempted: dict[int, float] = {}
            for i, client in enumerate(clients):

                def note(change: StateChange, i: int = i) -> None:
                    attempted.setdefault(i, change.at)

                client.on_reconnecting(note)

            reset = time.monotonic()
            fault_proxy.reset()  # every link of the herd drops at the same instant
            backs = await asyncio.gather(*(timed_request(c, reset) for c in clients))
            with anyio.fail_after(10):
                while len(attempted) < HERD:  # noqa: ASYNC110 - filled by 40 callbacks
                    await asyncio.sleep(0.01)

            # The lone client, with the herd connected and idle in the same process. (On a
            # loaded machine the herd's storm can stall the loop past the lone client's
            # keepalive: it then reconnects by itself first. Measure from CONNECTED.)
            await lone.wait_connected(30)
            mark = len(lone_rec.changes)
            lone_reset = time.monotonic()
            lone_proxy.reset()
            lone_back = await timed_request(lone, lone_reset)

    times = sorted(attempted.values())
    # Starts reserved at least MAX_GAP apart: the herd spans (HERD - 1) gaps at least.
    assert times[-1] - times[0] >= (HERD - 1) * MAX_GAP * 0.9, times
    assert max(backs) <= policy.initial_delay + 5.0, f"slowest back after {max(backs):.2f}s"

    lost, attempt = lone_rec.changes[mark : mark + 2]
    assert (lost.new, attempt.new) == (S.RECONNECTING, S.CONNECTING)
    assert lost.next_delay == policy.initial_delay
    assert attempt.at - lost.at <= policy.initial_delay + 0.3
    assert lone_back <= policy.initial_delay + 1.0, f"lone client back after {lone_back:.2f}s"
