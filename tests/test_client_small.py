"""ResilientClient's smaller promises (issue 10, Why 11): a failing store is visible, the
probe is the first pong, health follows a login, Telethon's reconnect chatter stays at
DEBUG, handlers can be registered before entering."""

from __future__ import annotations

import contextvars
import logging
import math
from typing import Any

import anyio
import pytest
from telethon import events

from resilient_tg import ConnectionState, KeepalivePolicy, ResilientClient
from resilient_tg._connection import current_observer, install_log_filter
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import (
    FAST_KEEPALIVE,
    FAST_RECONNECT,
    Recorder,
    empty_store,
    log_in,
    running,
    seeded_store,
)
from .conftest import STEP_TIMEOUT, wait_until

pytestmark = pytest.mark.anyio

S = ConnectionState


class FailingStore(MemoryStore):
    """A MemoryStore whose saves fail (like a full disk) until ``failing`` is cleared."""

    def __init__(self, data: SessionData | None = None) -> None:
        super().__init__(data)
        self.failing = True

    async def save(self, data: SessionData) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        await super().save(data)


def _telethon_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("telethon") and r.levelno >= logging.WARNING
    ]


# a. A failing store shows --------------------------------------------------------------


async def test_failing_store_shows_in_last_error_detail_and_a_warning_until_it_heals(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The new auth key cannot be made durable: the client stays out of CONNECTED and
    says why (naming the store once), then connects as soon as the store works."""
    seed = SessionData(
        dc_id=mtproto_server.dc_id, server_address=mtproto_server.host, port=mtproto_server.port
    )
    store = FailingStore(seed)
    caplog.set_level(logging.WARNING)
    async with running(store, mtproto_server) as (client, rec):
        await wait_until(lambda: "No space left" in (client.health().detail or ""))
        health = client.health()
        assert health.state is S.CONNECTING
        expected = "cannot save the session to memory://: OSError: [Errno 28] No space left"
        assert health.detail.startswith(expected)
        assert health.detail.endswith("; retrying")
        assert health.last_error is not None
        assert health.last_error.startswith(expected)
        assert health.store is not None
        assert health.store.last_save_error == "OSError: [Errno 28] No space left on device"
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("resilient_tg") and r.levelno == logging.WARNING
        ]
        assert any("No space left on device" in m for m in warnings), warnings
        # Every line names the store once.
        assert all(m.count("memory://") == 1 for m in warnings if "memory://" in m), warnings

        store.failing = False
        await client.wait_connected(10)
        data = await store.load()
        assert data is not None
        assert data.auth_key is not None
    assert S.CONNECTED in rec.states()


# b. The probe's answer is the first pong --------------------------------------------------


async def test_authorized_client_is_healthy_the_moment_wait_connected_returns(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    # The default keepalive: its pongs come 5 s apart, the probe's answer is what counts.
    async with running(store, mtproto_server, keepalive=KeepalivePolicy()) as (client, rec):
        for _ in range(3):  # the first connect and two reconnects
            await client.wait_connected(10)
            health = client.health()  # no await in between
            assert health.healthy, health
            assert health.last_pong_at is not None
            assert health.rtt is not None
            fault_proxy.reset()
            await rec.left(S.CONNECTED)


# c. Health follows a login made through client.telegram ---------------------------------------


async def test_login_through_telegram_updates_health_detail_and_stores_update_state(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = empty_store(mtproto_server)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        assert "not logged in" in client.health().detail
        await log_in(client, mtproto_server, alice)
        health = client.health()
        assert health.authorized is True
        assert "not logged in" not in health.detail
        assert health.detail.startswith("connected to ")
        await rec.until(lambda: client.health().healthy)

        # The fresh login's update state is kept and flushed like any other.
        rec.watch_messages()
        await mtproto_server.send_message(bob.id, alice.id, "after login")
        await rec.all_messages(["after login"])

        async def stored_pts() -> int:
            data = await store.load()
            state = data.update_state if data is not None else None
            return state.pts if state is not None else -1

        with anyio.fail_after(STEP_TIMEOUT):
            while await stored_pts() < 1:  # noqa: ASYNC110 - polled through load(), as a user would
                await anyio.sleep(0.05)


# d. Telethon's reconnect chatter stays at DEBUG ----------------------------------------------


async def test_telethon_reconnect_chatter_is_not_a_warning_through_outages_and_shutdown(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    caplog.set_level(logging.DEBUG, logger="telethon")  # chatter is kept, at DEBUG
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        # A reset with refused reconnects ("Server closed the connection", "Attempt N at
        # connecting failed"), then a plain reset.
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.until(lambda: rec.states().count(S.RECONNECTING) >= 3)
        fault_proxy.heal()
        await client.wait_connected(10)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        await client.wait_connected(10)
    assert _telethon_warnings(caplog) == []
    chatter = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("telethon") and r.levelno == logging.DEBUG
    ]
    assert any(m.startswith("Attempt ") and "at connecting failed" in m for m in chatter)
    assert any(m.startswith("Server closed the connection") for m in chatter)


def test_chatter_filter_touches_only_reconnect_chatter_of_links_a_client_owns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_filter()
    sender = logging.getLogger("telethon.network.mtprotosender")
    caplog.set_level(logging.DEBUG, logger="telethon")

    def log_all() -> None:
        sender.warning("Attempt %d at connecting failed: %s: %s", 1, "OSError", "refused")
        sender.warning("Security error while unpacking a received message: %s", "wrong session ID")
        sender.warning("Server indicated flood error at transport level: %s", "429")
        sender.warning("Security error while unpacking a received message: %s", "bad msg_key")

    def owned() -> None:
        current_observer.set(object())  # type: ignore[arg-type]  # any observer: owned
        log_all()

    contextvars.copy_context().run(owned)
    levels = [(r.levelname, r.getMessage()[:20]) for r in caplog.records]
    assert levels == [
        ("DEBUG", "Attempt 1 at connect"),
        ("DEBUG", "Security error while"),
        ("WARNING", "Server indicated flo"),  # not chatter: keeps its level
        ("WARNING", "Security error while"),  # another security error: loud
    ]
    caplog.clear()
    log_all()  # a plain Telethon client's link: untouched
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 4

    caplog.clear()
    caplog.set_level(logging.INFO, logger="telethon")
    contextvars.copy_context().run(owned)
    # Where DEBUG is off, routed chatter is not shown at all.
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]


# e. Handlers registered before entering --------------------------------------------------------


async def test_handler_registered_before_entering_receives_a_message(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    client = ResilientClient(
        seeded_store(mtproto_server, user=alice),
        mtproto_server.api_id,
        mtproto_server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
    )
    early: list[str] = []
    late: list[str] = []

    @client.on(events.NewMessage(incoming=True))
    async def on_message(event: Any) -> None:
        early.append(event.raw_text)

    async def on_any(event: Any) -> None:
        late.append(event.raw_text)

    with pytest.raises(RuntimeError, match=r"client\.on"):
        client.telegram  # noqa: B018 - the error points at client.on
    rec = Recorder(client)
    async with client:
        await client.wait_connected(10)
        client.add_event_handler(on_any, events.NewMessage(incoming=True))  # at once
        await mtproto_server.send_message(bob.id, alice.id, "hello")
        await rec.until(lambda: early == ["hello"] and late == ["hello"])
