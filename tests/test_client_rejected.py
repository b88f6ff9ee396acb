"""The server refuses the app's api_id/api_hash: REJECTED, named, final, the store untouched."""

from __future__ import annotations

import logging
import time

import pytest
from telethon import errors
from telethon.tl import functions

from resilient_tg import (
    AppRejectedError,
    ConnectionState,
    ResilientClient,
    StateChange,
    StateReason,
)
from resilient_tg._fatal import APP_REJECTED, app_rejected
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import (
    FAST_KEEPALIVE,
    FAST_RECONNECT,
    Recorder,
    empty_store,
    running,
    seeded_store,
)

pytestmark = pytest.mark.anyio

S = ConnectionState


def _wrong_api_id(server: MTProtoTestServer) -> int:
    return server.api_id + 1


async def test_wrong_api_id_is_rejected_at_once_and_the_store_is_left_untouched(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    before = await store.load()
    client = ResilientClient(
        store,
        _wrong_api_id(mtproto_server),
        mtproto_server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
    )
    rec = Recorder(client)
    rejected: list[StateChange] = []
    saves_then: list[int] = []
    # Telethon writes the (same) key back on every connect, before initConnection is
    # answered; from the refusal on, nothing is written.
    client.on_state_change(
        lambda change: saves_then.append(store.saves) if change.new is S.REJECTED else None
    )
    client.on_rejected(rejected.append)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    async with client:
        with pytest.raises(AppRejectedError, match="API_ID_INVALID") as raised:
            await client.wait_connected(10)
        assert time.monotonic() - started < 5.0
        assert raised.value.reason == "API_ID_INVALID"
        assert client.state is S.REJECTED
        health = client.health()
        assert health.reason is StateReason.APP_REJECTED
        assert health.last_error is not None
        assert "API_ID_INVALID" in health.last_error
        assert health.healthy is False
        assert health.to_dict()["state"] == "rejected"
        # Requests fail with the same error, at once.
        with pytest.raises(AppRejectedError):
            await client.telegram(functions.updates.GetStateRequest())
        await rec.until(lambda: len(rejected) == 1)
    # Final: leaving does not turn it into CLOSED, and nothing was retried.
    assert client.state is S.REJECTED
    assert [c.new for c in rejected] == [S.REJECTED]
    assert rejected[0].reason is StateReason.APP_REJECTED
    assert rec.states() == [S.CONNECTING, S.REJECTED]
    assert store.saves == saves_then[0]
    assert await store.load() == before
    assert not [r for r in caplog.records if "(a bug)" in r.getMessage()]


async def test_a_never_authorized_session_with_a_wrong_api_id_is_rejected_too(
    mtproto_server: MTProtoTestServer,
) -> None:
    store = empty_store(mtproto_server)
    client = ResilientClient(
        store,
        _wrong_api_id(mtproto_server),
        mtproto_server.api_hash,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
    )
    rec = Recorder(client)
    async with client:
        with pytest.raises(AppRejectedError):
            await client.wait_connected(10)
    assert S.RECONNECTING not in rec.states()
    assert client.state is S.REJECTED


def test_the_whole_family_of_app_refusals_is_recognised_and_nothing_else() -> None:
    for cls in APP_REJECTED:
        error = cls(request=None)
        name = app_rejected(error)
        assert name is not None
        assert errors.rpc_errors_dict[name] is cls
    assert app_rejected(errors.AuthKeyUnregisteredError(request=None)) is None
    assert app_rejected(errors.FloodWaitError(request=None, capture=3)) is None
    assert app_rejected(errors.ServerError(None, "INTERNAL", 500)) is None
    assert app_rejected(ValueError("API_ID_INVALID")) is None
    # A generic error carrying the name (as rpc_message_to_error builds it for unknown
    # classes) is recognised by its message.
    assert app_rejected(errors.BadRequestError(None, "API_ID_PUBLISHED_FLOOD", 400)) == (
        "API_ID_PUBLISHED_FLOOD"
    )


def test_rejected_is_terminal() -> None:
    assert S.REJECTED.terminal
    assert not S.REJECTED.link_up


async def test_a_refusal_answered_after_a_reconnect_is_rejected_too(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe after a reconnect answered API_ID_PUBLISHED_FLOOD: REJECTED, not a retry
    loop and not AUTH_LOST."""
    caplog.set_level(logging.DEBUG)
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        rejected: list[StateChange] = []
        client.on_rejected(rejected.append)
        await client.wait_connected(10)
        mtproto_server.inject_rpc_error("updates.getState", "API_ID_PUBLISHED_FLOOD", code=400)
        fault_proxy.reset()
        await rec.state(S.REJECTED)
        with pytest.raises(AppRejectedError) as raised:
            await client.wait_connected(1)
        assert raised.value.reason == "API_ID_PUBLISHED_FLOOD"
        assert "API_ID_PUBLISHED_FLOOD" in (client.health().last_error or "")
        await rec.until(lambda: len(rejected) == 1)
    assert S.AUTH_LOST not in rec.states()
    assert client.state is S.REJECTED
    assert not [r for r in caplog.records if "(a bug)" in r.getMessage()]


async def test_other_errors_answered_to_the_probe_are_retried_not_a_bug(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer the client cannot connect with (here CONNECTION_NOT_INITED) is a server
    error: the link is rebuilt with backoff, and nothing is logged as a bug."""
    caplog.set_level(logging.DEBUG)
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server) as (client, rec):
        await client.wait_connected(10)
        mtproto_server.inject_rpc_error("updates.getState", "CONNECTION_NOT_INITED", code=400)
        fault_proxy.reset()
        await rec.until(lambda: sum(1 for s in rec.states() if s is S.CONNECTED) >= 2)
        assert any(c.reason is StateReason.SERVER_ERROR for c in rec.changes)
        assert "CONNECTION_NOT_INITED" in (client.health().last_error or "")
    assert not [r for r in caplog.records if "(a bug)" in r.getMessage()]
