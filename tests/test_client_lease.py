"""The session lease under a store that stops answering, and after a pause past it: the
link is dropped before another holder can take the lease, whatever the renewal is doing
and whatever runs first when the process resumes."""

from __future__ import annotations

import asyncio
import time

import pytest
from telethon.tl import functions

from resilient_tg import ConnectionState, ResilientClient, StateReason, _compat
from resilient_tg._lease import LeaseKeeper
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.stores._base import Lease
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, running
from .conftest import telethon_client, wait_until

pytestmark = pytest.mark.anyio

S = ConnectionState


class SharedLease(MemoryStore):
    """A MemoryStore whose lease is keyed by ``key``: two of them lease one session, as
    two processes on one database would. Records when each lease call returned."""

    def __init__(self, data: SessionData, key: str) -> None:
        super().__init__(data)
        self._key = key
        self.expires_at: float | None = None  # of the last lease this store handed out
        self.acquired_at: float | None = None

    def lease_key(self) -> str:
        return self._key

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        lease = await super().acquire_lease(holder, ttl)
        self.expires_at = lease.expires_at
        self.acquired_at = time.time()
        return lease

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        lease = await super().renew_lease(holder, ttl)
        self.expires_at = lease.expires_at
        return lease


class Partitioned(SharedLease):
    """Its lease calls hang forever once ``cut`` is set (the database is unreachable)."""

    cut = False

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        if self.cut:
            await asyncio.Event().wait()
        return await super().acquire_lease(holder, ttl)

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        if self.cut:
            await asyncio.Event().wait()
        return await super().renew_lease(holder, ttl)


async def test_hanging_renewals_drop_the_link_margin_before_the_lease_expires(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    data = SessionData(
        dc_id=mtproto_server.dc_id,
        server_address=mtproto_server.host,
        port=fault_proxy.port,
        auth_key=key,
    )
    first_store = Partitioned(data, "alice")
    ttl = 3.0
    margin = ttl / 6
    async with running(first_store, mtproto_server, lease_ttl=ttl) as (first, rec):
        await first.wait_connected(10)
        upstream = {c.peer for c in mtproto_server.connections}
        assert fault_proxy.links_open == 1
        first_store.cut = True
        # The second holder, straight to the server, waits for the lease to expire.
        second_store = SharedLease(
            SessionData(
                dc_id=mtproto_server.dc_id,
                server_address=mtproto_server.host,
                port=mtproto_server.port,
                auth_key=key,
            ),
            "alice",
        )
        second = ResilientClient(
            second_store,
            mtproto_server.api_id,
            mtproto_server.api_hash,
            keepalive=FAST_KEEPALIVE,
            reconnect=FAST_RECONNECT,
            lease_ttl=ttl,
        )

        async def run_second() -> None:
            async with second:
                await second.wait_connected(20)

        task = asyncio.ensure_future(run_second())
        try:
            await rec.until(lambda: S.WAITING_LEASE in rec.states())
            drop = next(c for c in rec.changes if c.new is S.WAITING_LEASE)
            assert drop.reason is StateReason.LEASE
            assert "lease lost" in drop.detail
            await wait_until(
                lambda: (
                    fault_proxy.links_open == 0
                    and not upstream & {c.peer for c in mtproto_server.connections}
                )
            )
            closed_at = time.time()
            expires_at = first_store.expires_at  # the last lease the store handed us
            assert expires_at is not None
            # Dropped by the timer at expires_at - margin (+ slack for a loaded machine),
            # and the link was gone before the lease could pass to anyone else.
            assert drop.at <= expires_at - margin + 0.3
            assert closed_at < expires_at
            await asyncio.wait_for(task, 20)
            assert second_store.acquired_at is not None
            assert second_store.acquired_at >= expires_at
            assert first.state is S.WAITING_LEASE
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_healthy_store_keeps_the_lease_and_the_link(
    mtproto_server: MTProtoTestServer,
) -> None:
    """The expiry timer is re-armed by every renewal: it never fires while they work."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    data = SessionData(
        dc_id=mtproto_server.dc_id,
        server_address=mtproto_server.host,
        port=mtproto_server.port,
        auth_key=key,
    )
    store = SharedLease(data, "alice-healthy")
    ttl = 1.5
    async with running(store, mtproto_server, lease_ttl=ttl) as (client, rec):
        await client.wait_connected(10)
        first_expiry = store.expires_at
        assert first_expiry is not None
        # Past the first lease's expiry (renewed meanwhile): still connected.
        await wait_until(lambda: time.time() > first_expiry + ttl / 2)
        assert S.WAITING_LEASE not in rec.states()
        assert client.state is S.CONNECTED
        lease = client.health().lease
        assert lease is not None
        assert lease.ours
        assert lease.expires_at > first_expiry


async def test_check_drops_a_lease_past_its_time_before_the_overdue_timer_runs() -> None:
    """After a pause (here the event loop blocked past the lease) the expiry timer is
    overdue but has not run; the first check() drops the lease at once, reports the loss
    once, and the overdue timer adds nothing."""
    lost: list[str] = []
    keeper = LeaseKeeper(
        MemoryStore(), "holder-a", 0.6, on_waiting=lambda holder: None, on_lost=lost.append
    )
    await keeper.acquire()
    assert keeper.check()
    assert keeper.lease is not None
    pause = keeper.lease.expires_at - keeper.margin - time.time() + 0.05
    time.sleep(pause)  # noqa: ASYNC251 - the blocked loop is the point: no timer runs
    assert lost == []
    assert not keeper.check()
    assert (keeper.lease, keeper.lost, keeper.losses) == (None, True, 1)
    assert len(lost) == 1
    assert lost[0].startswith("not renewed in time")
    await asyncio.sleep(0.05)  # the overdue timer was cancelled with the lease
    assert len(lost) == 1
    assert not keeper.check()
    # Taken again, as the client's recovery does: usable once resumed.
    await keeper.acquire(announce=False)
    assert not keeper.check()
    keeper.resume()
    assert keeper.check()
    assert keeper.losses == 1
    await keeper.release()


async def test_a_request_after_a_pause_past_the_lease_waits_for_the_lease(
    mtproto_server: MTProtoTestServer,
) -> None:
    """The loop is blocked past the lease (shorter than the server's ping deadline, so
    the old link is still open), then a request is made at once: it runs before the
    overdue expiry timer, and is not handed to the old link but sent after the lease
    was taken again and the link rebuilt."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    data = SessionData(
        dc_id=mtproto_server.dc_id,
        server_address=mtproto_server.host,
        port=mtproto_server.port,
        auth_key=key,
    )
    store = SharedLease(data, "alice-paused")
    async with running(store, mtproto_server, lease_ttl=0.6) as (client, rec):
        await client.wait_connected(10)
        lease = client.health().lease
        assert lease is not None
        # Past the point where the lease is dropped, not yet at the server's ping deadline.
        pause = lease.expires_at - client.lease_ttl / 6 - time.time() + 0.05
        assert pause < FAST_KEEPALIVE.disconnect_delay
        time.sleep(pause)  # noqa: ASYNC251 - the blocked loop is the point
        request = asyncio.ensure_future(client.telegram(functions.help.GetNearestDcRequest()))
        await asyncio.wait_for(request, 10)
        lost = next(c for c in rec.changes if c.new is S.WAITING_LEASE)
        assert "lease lost" in lost.detail
        reconnect = next(c for c in rec.changes if c.new is S.CONNECTING and c.at > lost.at)
        sent = [r for r in mtproto_server.requests if r.method == "help.getNearestDc"]
        assert len(sent) == 1
        assert sent[0].at > reconnect.at


async def test_a_lease_lost_while_the_first_connect_retries_does_not_stall_the_client(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """The first connect of a cycle runs in the client's own task, which the lease
    recovery's disconnect() does not cancel: on a loss it must end, and the next cycle
    connect once the lease is back (it used to stall, or crash inside Telethon)."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    key = mtproto_server.issue_auth_key(alice.id)
    data = SessionData(
        dc_id=mtproto_server.dc_id,
        server_address=mtproto_server.host,
        port=fault_proxy.port,
        auth_key=key,
    )
    store = Partitioned(data, "alice-first-connect")
    fault_proxy.refuse(60.0)
    async with running(store, mtproto_server, lease_ttl=1.5) as (client, rec):
        await rec.until(lambda: rec.states().count(S.RECONNECTING) >= 2)
        store.cut = True  # renewals hang: the lease is dropped while the connect retries
        await rec.state(S.WAITING_LEASE)
        store.cut = False

        def leased() -> bool:
            lease = client.health().lease
            return lease is not None and lease.ours

        await wait_until(leased)
        fault_proxy.heal()
        await client.wait_connected(10)
        assert mtproto_server.max_links_per_key() == 1


async def test_a_reconnect_cancelled_before_it_starts_leaves_no_dead_sender(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Telethon marks its sender reconnecting when a link breaks and only the reconnect
    task clears the mark; the lease recovery's disconnect() can cancel that task before
    it runs. `_compat.clear_stale_reconnect` clears the stale mark before our next
    connect, or that link's send and receive loops would end at once."""
    async with telethon_client(mtproto_server) as client:
        await client(functions.help.GetConfigRequest())
        sender = client._sender
        sender._start_reconnect(None)  # what its loops do when the link breaks
        await _compat.drop_link(client)  # the sender's disconnect(), before the task ran
        assert sender._reconnecting  # Telethon 1.45 leaves it set
        assert _compat.clear_stale_reconnect(client)
        assert not _compat.clear_stale_reconnect(client)
        await asyncio.wait_for(client.connect(), 5)  # its initConnection is answered
        config = await asyncio.wait_for(client(functions.help.GetConfigRequest()), 5)
        assert config.dc_options
