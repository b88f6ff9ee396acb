"""The client on a server with several DCs: health names the home DC, the supervisor
owns Telethon's DC switch at login (the link to the new DC is one of its reconnects:
our connection class, keepalive, policy and probe), and the store ends on the new DC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from telethon import errors, events
from telethon.crypto import AuthKey
from telethon.tl import functions, types

from resilient_tg import (
    ConnectionState,
    NotConnectedError,
    ResilientClient,
    ResultUnknownError,
    StateChange,
    StateReason,
)
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer, TestUser

from .clienttools import (
    FAST_KEEPALIVE,
    FAST_RECONNECT,
    Recorder,
    empty_store,
    log_in,
    running,
    seeded_store,
)
from .conftest import wait_until

pytestmark = pytest.mark.anyio

S = ConnectionState
HOME = 4  # the DC the accounts of these tests live on


@contextlib.asynccontextmanager
async def four_dcs() -> AsyncIterator[tuple[MTProtoTestServer, FaultProxy]]:
    """DCs 1..4 (a fresh session dials DC 2); DC 4 is advertised behind a FaultProxy."""
    async with MTProtoTestServer(dcs=4) as server, FaultProxy(*server.dc_address(HOME)) as proxy:
        server.advertise(HOME, proxy.host, proxy.port)
        yield server, proxy


def after_switch(rec: Recorder) -> list[StateChange]:
    """The transitions from the DC switch on (it must have happened exactly once)."""
    switches = [i for i, c in enumerate(rec.changes) if c.reason is StateReason.DC_MIGRATE]
    assert len(switches) == 1, rec.changes
    return rec.changes[switches[0] :]


def assert_truthful_switch(rec: Recorder, proxy: FaultProxy) -> None:
    """RECONNECTING for the switch, CONNECTING to DC 4, and no CONNECTED but to DC 4."""
    changes = after_switch(rec)
    assert changes[0].new is S.RECONNECTING
    assert f"to DC {HOME}" in changes[0].detail
    assert changes[1].new is S.CONNECTING
    assert f"DC {HOME} at {proxy.host}:{proxy.port}" in changes[1].detail
    connected = [c for c in changes if c.new is S.CONNECTED]
    assert connected
    assert all(f"{proxy.host}:{proxy.port}" in c.detail for c in connected)
    before = rec.changes[: len(rec.changes) - len(changes)]
    assert all(f"{proxy.host}:{proxy.port}" not in c.detail for c in before)


async def assert_on_home_dc(
    server: MTProtoTestServer, proxy: FaultProxy, data: SessionData
) -> None:
    """The store names DC 4 (behind the proxy) and holds a key DC 4 made and knows."""
    assert (data.dc_id, data.server_address, data.port) == (HOME, proxy.host, proxy.port)
    assert data.auth_key is not None
    assert len(data.auth_key) == 256
    assert data.ever_authorized is True
    key_id = AuthKey(data.auth_key).key_id
    # Only DC 4 knows the key: a client using it on DC 2 gets -404.
    records = [r for r in server.requests if r.auth_key_id == key_id]
    assert records
    assert {r.dc_id for r in records} == {HOME}


async def test_health_names_the_home_dc(mtproto_server: MTProtoTestServer) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    async with running(empty_store(mtproto_server), mtproto_server) as (client, rec):
        assert client.health().dc_id == mtproto_server.dc_id  # known from the store at once
        await client.wait_connected(10)
        await log_in(client, mtproto_server, alice)
        await rec.until(lambda: client.health().healthy)
        health = client.health()
        assert health.dc_id == mtproto_server.dc_id
        shown = health.to_dict()
        assert shown["dc_id"] == mtproto_server.dc_id
        json.dumps(shown)


async def test_login_on_another_dc_is_a_supervised_switch_then_a_restart_goes_straight_there() -> (
    None
):
    async with four_dcs() as (server, proxy):
        alice: TestUser = server.create_user("+15550401", "Alice", dc_id=HOME)
        store = empty_store(server)
        async with running(store, server, request_timeout=20.0) as (client, rec):
            await client.wait_connected(10)
            assert client.health().dc_id == 2
            await log_in(client, server, alice)
            await rec.until(lambda: client.health().healthy)
            health = client.health()
            assert health.dc_id == HOME
            assert health.authorized is True
            assert_truthful_switch(rec, proxy)
            # The login itself was answered on DC 4.
            assert [r.dc_id for r in server.requests_for("auth.signIn")] == [HOME]
            # The link to DC 4 is ours: the keepalive finds it dead, the policy rebuilds it.
            proxy.blackhole()
            await rec.until(
                lambda: rec.changes[-1].reason is StateReason.KEEPALIVE_TIMEOUT,
                FAST_KEEPALIVE.detection_bound + 10,
            )
            proxy.heal()
            await rec.until(lambda: client.health().healthy)
            assert client.health().dc_id == HOME
        data = await store.load()
        assert data is not None
        await assert_on_home_dc(server, proxy, data)

        # The next start dials DC 4 straight away: nothing reaches DC 2.
        server.clear_requests()
        again = MemoryStore(data)
        async with running(again, server) as (client, rec):
            await client.wait_connected(10)
            await rec.until(lambda: client.health().healthy)
            assert client.health().dc_id == HOME
            assert all(c.reason is not StateReason.DC_MIGRATE for c in rec.changes)
            assert {c.dc_id for c in server.connections} == {HOME}
        assert server.requests
        assert {r.dc_id for r in server.requests} == {HOME}


@pytest.mark.parametrize("fault", ["refuse", "blackhole", "reset"])
async def test_a_fault_in_front_of_the_new_dc_during_the_switch_is_recovered(fault: str) -> None:
    """The link to DC 4 fails while the session moves there: the policy retries it, the
    login completes on DC 4, and the store ends on DC 4 with a key DC 4 made."""
    async with four_dcs() as (server, proxy):
        bob = server.create_user("+15550402", "Bob", dc_id=HOME)
        store = empty_store(server)
        async with running(store, server, request_timeout=30.0) as (client, rec):
            await client.wait_connected(10)
            if fault == "refuse":
                proxy.refuse(60.0)  # healed below, once refused
            else:
                proxy.blackhole()  # the link to DC 4 is accepted, then hears nothing
            async with anyio.create_task_group() as tg:
                # The code request waits (within request_timeout) for the link to DC 4.
                tg.start_soon(client.telegram.send_code_request, bob.phone)
                await rec.until(
                    lambda: any(c.reason is StateReason.DC_MIGRATE for c in rec.changes)
                )
                if fault == "refuse":
                    await rec.until(
                        lambda: any(c.reason is StateReason.REFUSED for c in after_switch(rec))
                    )
                    proxy.heal()
                elif fault == "reset":
                    # The first link to DC 4 hangs in its handshake: reset it.
                    await wait_until(lambda: proxy.links_open >= 1)
                    proxy.heal()
                    proxy.reset()
                elif fault == "blackhole":
                    await rec.until(
                        lambda: any(
                            c.reason is StateReason.CONNECT_TIMEOUT for c in after_switch(rec)
                        )
                    )
                    # Stuck on the way to DC 4: health says so, and names DC 4.
                    health = client.health()
                    assert health.state in (S.RECONNECTING, S.CONNECTING)
                    assert health.dc_id == HOME
                    assert not health.connected
                    assert not health.healthy
                    proxy.heal()
            await client.telegram.sign_in(bob.phone, server.login_code(bob.phone))
            await rec.until(lambda: client.health().healthy)
            assert client.health().dc_id == HOME
            changes = after_switch(rec)
            failed = [c for c in changes[1:] if c.new is S.RECONNECTING]
            assert failed, changes
            expected = {
                "refuse": {StateReason.REFUSED},
                "blackhole": {StateReason.CONNECT_TIMEOUT},
                "reset": {StateReason.RESET, StateReason.EOF, StateReason.TRANSPORT_ERROR},
            }[fault]
            assert failed[0].reason in expected, failed
            assert_truthful_switch(rec, proxy)
        data = await store.load()
        assert data is not None
        await assert_on_home_dc(server, proxy, data)


async def test_a_logged_in_session_is_never_moved_by_a_migrate_answer() -> None:
    """USER_MIGRATE_X to a logged-in session would cost it its key: the caller gets the
    error, and the link, the state and the store stay on the session's DC."""
    async with four_dcs() as (server, _proxy):
        carol = server.create_user("+15550403", "Carol")  # on DC 2, where the store points
        store = empty_store(server)
        async with running(store, server) as (client, rec):
            await client.wait_connected(10)
            await log_in(client, server, carol)
            await rec.until(lambda: client.health().healthy)
            server.inject_rpc_error("users.getFullUser", f"USER_MIGRATE_{HOME}")
            with pytest.raises(errors.UserMigrateError):
                await client.telegram(functions.users.GetFullUserRequest(types.InputUserSelf()))
            assert client.state is S.CONNECTED
            assert client.health().dc_id == 2
            assert all(c.reason is not StateReason.DC_MIGRATE for c in rec.changes)
            # Still logged in on DC 2.
            me = await client.telegram.get_me()
            assert me.id == carol.id
        data = await store.load()
        assert data is not None
        assert data.dc_id == 2
        assert data.port == server.port


# Downloads from another DC (exported senders) ---------------------------------------

FILE = bytes(range(256)) * 1200  # 300 KiB: a few getFile parts


class Inbox:
    """Messages with a file as the client's handlers see them."""

    def __init__(self, client: ResilientClient) -> None:
        self.messages: list[Any] = []

        @client.on(events.NewMessage(incoming=True))
        async def on_message(event: Any) -> None:
            if event.message.media is not None:
                self.messages.append(event.message)

    async def next(self, count: int) -> Any:
        await wait_until(lambda: len(self.messages) >= count)
        return self.messages[count - 1]


@contextlib.asynccontextmanager
async def downloader(
    server: MTProtoTestServer, **kwargs: Any
) -> AsyncIterator[tuple[ResilientClient, Recorder, Inbox, TestUser]]:
    """A logged-in client on DC 2 whose files are stored on DC 4 (behind the proxy)."""
    dave = server.create_user("+15550421", "Dave")
    erin = server.create_user("+15550422", "Erin", dc_id=HOME)
    client = ResilientClient(
        seeded_store(server, user=dave),
        server.api_id,
        server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
        **kwargs,
    )
    inbox = Inbox(client)
    rec = Recorder(client)
    async with client:
        await rec.until(lambda: client.health().healthy)
        await server.send_file(erin.id, dave.id, FILE, dc_id=HOME)
        yield client, rec, inbox, erin


def main_link_untouched(rec: Recorder, before: int, client: ResilientClient) -> None:
    """The exported link's trouble moved nothing of the main link's state or DC."""
    assert rec.changes[before:] == []
    assert client.state is S.CONNECTED
    assert client.health().dc_id == 2


async def test_a_download_from_another_dc_uses_an_exported_sender_apart_from_the_main_link() -> (
    None
):
    async with four_dcs() as (server, proxy), downloader(server) as (client, rec, inbox, _):
        message = await inbox.next(1)
        before = len(rec.changes)
        data = await client.telegram.download_media(message, bytes)
        assert data == FILE
        # The parts came from DC 4 (a getFile asked on DC 2 is sent there: FILE_MIGRATE_4).
        assert server.requests_for("upload.getFile")[-1].dc_id == HOME
        assert proxy.links_total == 1  # the exported link went to DC 4's advertised address
        main_link_untouched(rec, before, client)


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
async def test_a_download_from_another_dc_completes_after_a_fault_on_its_link(fault: str) -> None:
    async with (
        four_dcs() as (server, proxy),
        downloader(server, request_timeout=20.0) as (client, rec, inbox, _),
    ):
        message = await inbox.next(1)
        assert await client.telegram.download_media(message, bytes) == FILE  # link ready
        before = len(rec.changes)
        links = proxy.links_total
        parts = len(server.requests_for("upload.getFile"))
        if fault == "blackhole":
            proxy.blackhole()
        else:
            proxy.latency(0.1)  # the parts come one by one: the reset lands between them
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            result: list[bytes] = []

            async def download() -> None:
                result.append(await client.telegram.download_media(message, bytes))

            tg.start_soon(download)
            if fault == "blackhole":
                # The watch finds the exported link dead and Telethon dials again.
                await wait_until(
                    lambda: proxy.links_total > links, FAST_KEEPALIVE.detection_bound + 5
                )
            else:
                # A part was served on DC 4 and more are to come: reset the link.
                await wait_until(
                    lambda: (
                        [r.dc_id for r in server.requests_for("upload.getFile")[parts:]].count(HOME)
                        >= 1
                    )
                )
                assert not result
                proxy.reset()
            proxy.heal()
        assert result == [FILE]
        assert proxy.links_total > links  # the exported link was dialled again
        assert time.monotonic() - started < client.request_timeout
        main_link_untouched(rec, before, client)


async def test_a_download_from_a_dead_dc_fails_with_our_error_within_request_timeout() -> None:
    limit = 3.0
    async with (
        four_dcs() as (server, proxy),
        downloader(server, request_timeout=limit) as (
            client,
            rec,
            inbox,
            _,
        ),
    ):
        message = await inbox.next(1)
        assert await client.telegram.download_media(message, bytes) == FILE
        before = len(rec.changes)
        proxy.blackhole()  # the exported link is up, then hears nothing
        started = time.monotonic()
        with pytest.raises(ResultUnknownError) as info:
            await client.telegram.download_media(message, bytes)
        assert f"DC {HOME}" in str(info.value)
        assert time.monotonic() - started < limit + 1.0
        proxy.heal()
        # A fresh borrow to a refusing DC: NotConnectedError, nothing was sent there.
        proxy.refuse(60)
        started = time.monotonic()
        with pytest.raises(NotConnectedError):
            await client.telegram.download_media(message, bytes)
        assert time.monotonic() - started < limit + 1.0
        main_link_untouched(rec, before, client)
        proxy.heal()
        assert await client.telegram.download_media(message, bytes) == FILE


async def test_leaving_during_a_download_closes_the_exported_senders() -> None:
    async with four_dcs() as (server, proxy):
        tasks_before = asyncio.all_tasks()
        async with downloader(server, request_timeout=30.0) as (client, _rec, inbox, _):
            message = await inbox.next(1)
            assert await client.telegram.download_media(message, bytes) == FILE
            proxy.blackhole()
            dropped = proxy.bytes_dropped
            errors_seen: list[BaseException] = []

            async def download() -> None:
                try:
                    await client.telegram.download_media(message, bytes)
                except (ResultUnknownError, NotConnectedError) as exc:
                    errors_seen.append(exc)

            task = asyncio.ensure_future(download())
            # The getFile went to DC 4 on the exported link, into the black hole.
            await wait_until(lambda: proxy.bytes_dropped > dropped)
        # Left: the download ended with our error, and no link or task is left.
        with anyio.fail_after(10):
            await task
        assert len(errors_seen) == 1
        assert isinstance(errors_seen[0], ResultUnknownError)
        proxy.heal()
        await wait_until(lambda: not server.connections and proxy.links_open == 0)
        leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
        leftover.discard(asyncio.current_task())  # type: ignore[arg-type]
        assert not leftover, leftover


async def test_a_download_from_the_home_dc_is_bounded_like_any_request(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Telethon sends a home-DC download on the main sender directly, past __call__: it
    takes the request gate all the same, so a link that stays dead ends it with our error
    within request_timeout (raw Telethon would resend it on every reconnect, forever)."""
    server = mtproto_server
    limit = 3.0
    frank = server.create_user("+15550431", "Frank")
    grace = server.create_user("+15550432", "Grace")
    store = seeded_store(server, fault_proxy.port, user=frank)
    async with running(store, server, request_timeout=limit) as (client, rec):
        inbox = Inbox(client)
        await rec.until(lambda: client.health().healthy)
        await server.send_file(grace.id, frank.id, FILE)
        message = await inbox.next(1)
        fault_proxy.blackhole()
        started = time.monotonic()
        with pytest.raises((ResultUnknownError, NotConnectedError)):
            await client.telegram.download_media(message, bytes)
        assert time.monotonic() - started < limit + 1.0
        fault_proxy.heal()
        await rec.until(lambda: client.health().healthy)
        assert await client.telegram.download_media(message, bytes) == FILE
        assert {r.dc_id for r in server.requests_for("upload.getFile")} == {server.dc_id}
