"""Request lifecycle: every request through ``client.telegram`` ends exactly once, and a
request whose caller was given an ending never reaches the server afterwards.

What reached the server is read from the test server's request record; what Telethon
still holds is read from its send queue and pending states (the places `_compat`
withdraws requests from).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import math
import time
from typing import Any

import anyio
import pytest
from telethon import TelegramClient, errors
from telethon.network import ConnectionTcpFull
from telethon.network.requeststate import RequestState
from telethon.sessions import MemorySession
from telethon.tl import functions, types
from telethon.tl.tlobject import TLRequest

from resilient_tg import (
    ConnectionState,
    KeepalivePolicy,
    NotConnectedError,
    ResilientClient,
    ResilientTgError,
    ResultUnknownError,
    _compat,
)
from resilient_tg.testing import FaultProxy, MTProtoTestServer, TestUser

from .clienttools import FAST_RECONNECT, running, seeded_store
from .conftest import wait_until

pytestmark = pytest.mark.anyio

S = ConnectionState
# Long enough that the keepalive never drops a link inside a test (where it must not).
SLOW_KEEPALIVE = KeepalivePolicy(interval=10.0, timeout=10.0)


def held_by_telethon(client: ResilientClient) -> list[str]:
    """The requests Telethon still keeps in its send queue and its pending (sent) states.

    Besides the test's own requests it may hold ones whose callers still wait (a
    keepalive ping, the get_me Telethon sends after each reconnect): tests look for
    their request types by name."""
    sender = client.telegram._sender
    states = [*sender._send_queue._deque, *sender._pending_state.values()]
    assert not any(s.future.done() for s in states if isinstance(s.request, TLRequest))
    return [type(s.request).__name__ for s in states if isinstance(s.request, TLRequest)]


def stored_texts(server: MTProtoTestServer, owner: TestUser) -> collections.Counter[str]:
    """Messages the server stored as sent by ``owner``."""
    account = server._world.accounts[owner.id]
    return collections.Counter(m.text for m in account.box if m.out)


@pytest.fixture(params=[True, False], ids=["timer", "helper-task"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Runs a test on the 3.11+ timer path and on the 3.10 helper-task path."""
    from resilient_tg import _requests as gate_module

    fast = bool(request.param)
    monkeypatch.setattr(gate_module, "_CAN_TELL_CANCELLATIONS", fast)
    return fast


def test_max_queued_requests_is_validated() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_queued_requests"):
            ResilientClient("memory://", 1, "hash", max_queued_requests=bad)  # type: ignore[arg-type]
    assert ResilientClient("memory://", 1, "hash").max_queued_requests == 1000


def test_result_unknown_error_is_a_timeout_and_carries_the_request() -> None:
    request = functions.updates.GetStateRequest()
    error = ResultUnknownError("sent, no answer", request=request)
    assert isinstance(error, ResilientTgError)
    assert isinstance(error, TimeoutError)
    assert error.request is request


async def test_request_never_sent_is_not_connected_and_never_written_later(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, request_path: bool
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, request_timeout=1.0) as (client, rec):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        with pytest.raises(NotConnectedError, match=r"was not sent.*request_timeout=1\.0s"):
            await client.telegram.send_message(peer, "never sent")
        assert "SendMessageRequest" not in held_by_telethon(client)  # withdrawn
        fault_proxy.heal()
        await client.wait_connected(10)
        await client.telegram.send_message(peer, "after heal")  # the link carries requests
        assert stored_texts(mtproto_server, alice) == {"after heal": 1}
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 1


async def test_blackholed_send_times_out_and_never_executes_after_heal(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, request_path: bool
) -> None:
    """Why 1: the caller is told the request failed, retries after heal, and the message
    is stored once; the abandoned first try never executes later."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, request_timeout=2.0) as (client, _rec):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)
        fault_proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(ResultUnknownError, match="may or may not have taken effect") as info:
            await client.telegram.send_message(peer, "exactly once")
        assert 1.9 <= time.monotonic() - started < 5.0
        assert isinstance(info.value.request, functions.messages.SendMessageRequest)
        assert "SendMessageRequest" not in held_by_telethon(client)
        fault_proxy.heal()
        await client.wait_connected(10)
        # The caller retries, as the error invites: with the same request (random_id).
        await client.telegram(info.value.request)
        # A round trip after the retry: anything replayed would have arrived before it.
        await client.telegram(functions.updates.GetStateRequest())
        assert stored_texts(mtproto_server, alice) == {"exactly once": 1}
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 1


async def test_caller_cancellation_withdraws_the_request(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, request_path: bool
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, keepalive=SLOW_KEEPALIVE, request_timeout=30.0) as (
        client,
        rec,
    ):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)

        # Queued while the link is down (never given a msg_id).
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        queued = asyncio.ensure_future(client.telegram.send_message(peer, "cancelled queued"))
        await wait_until(lambda: "SendMessageRequest" in held_by_telethon(client))
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert "SendMessageRequest" not in held_by_telethon(client)
        fault_proxy.heal()
        await client.wait_connected(10)

        # Sent on a link whose bytes are lost (given a msg_id, pending an answer).
        fault_proxy.blackhole()
        sent = asyncio.ensure_future(client.telegram.send_message(peer, "cancelled sent"))
        await wait_until(
            lambda: any(
                isinstance(state.request, functions.messages.SendMessageRequest)
                for state in client.telegram._sender._pending_state.values()
            )
        )
        sent.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sent
        assert "SendMessageRequest" not in held_by_telethon(client)
        fault_proxy.heal()
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        await client.wait_connected(10)
        await client.telegram.send_message(peer, "after")
        assert stored_texts(mtproto_server, alice) == {"after": 1}
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 1


async def test_answer_dropped_is_result_unknown_and_not_resent_after_heal(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, request_path: bool
) -> None:
    """Request delivered, answer dropped: the caller learns the outcome is unknown, holds
    the request, and the client never sends it again on its own."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, keepalive=SLOW_KEEPALIVE, request_timeout=1.0) as (
        client,
        rec,
    ):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)
        fault_proxy.blackhole(direction="down")
        with pytest.raises(ResultUnknownError, match=r"request_timeout=1\.0s") as info:
            await client.telegram.send_message(peer, "answer lost")
        request = info.value.request
        assert isinstance(request, functions.messages.SendMessageRequest)
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 1  # delivered
        assert "SendMessageRequest" not in held_by_telethon(client)
        fault_proxy.heal()  # the link lost bytes: it is reset, and a new one comes up
        await rec.left(S.CONNECTED)
        await client.wait_connected(10)
        await client.telegram(functions.updates.GetStateRequest())
        assert len(mtproto_server.requests_for("messages.sendMessage")) == 1  # not resent
        # Retrying the same request tells the caller it had taken effect.
        with pytest.raises(errors.RandomIdDuplicateError):
            await client.telegram(request)
        assert stored_texts(mtproto_server, alice) == {"answer lost": 1}


def _live_request_states() -> int:
    gc.collect()
    return sum(isinstance(o, RequestState) for o in gc.get_objects())


async def test_abandoned_requests_during_refusal_are_bounded_and_never_replayed(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Why 2: 5,000 requests made during an outage; the first max_queued_requests wait,
    the rest fail at once; none reaches the server after heal, Telethon holds nothing,
    and the link is back within the policy's delay."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    method = "help.getNearestDc"
    async with running(store, mtproto_server, request_timeout=0.5) as (client, rec):
        await client.wait_connected(10)
        await client.telegram(functions.help.GetNearestDcRequest())
        baseline_states = _live_request_states()
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        before = len(mtproto_server.requests_for(method))

        calls = [
            asyncio.ensure_future(client.telegram(functions.help.GetNearestDcRequest()))
            for _ in range(5000)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert all(isinstance(o, NotConnectedError) for o in outcomes), {
            type(o).__name__ for o in outcomes
        }
        full = [o for o in outcomes if "queue is full" in str(o)]
        # (what Telethon holds for the link counts: a stray ack or ping may take a slot)
        assert 5000 - client.max_queued_requests <= len(full) <= 5000 - 990
        assert "max_queued_requests=1000" in str(full[0])
        assert all("was not sent" in str(o) for o in outcomes)
        # Memory is back: Telethon keeps none of them.
        assert "GetNearestDcRequest" not in held_by_telethon(client)
        del calls, outcomes, full
        assert _live_request_states() <= baseline_states + 10

        healed = time.monotonic()
        fault_proxy.heal()
        await client.wait_connected(10)
        assert time.monotonic() - healed <= FAST_RECONNECT.max_delay + 3.0
        await client.telegram(functions.updates.GetStateRequest())
        await client.telegram(functions.help.GetNearestDcRequest())
        assert len(mtproto_server.requests_for(method)) == before + 1  # none replayed
        assert "GetNearestDcRequest" not in held_by_telethon(client)


async def test_server_error_until_timeout_is_that_error_not_silence(
    mtproto_server: MTProtoTestServer, request_path: bool
) -> None:
    """Why 12: a server that answers 500 INTERNAL to every try is reported with its error,
    and health's last_error shows it."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, user=alice)
    async with running(store, mtproto_server, request_timeout=4.0) as (client, _rec):
        await client.wait_connected(10)
        mtproto_server.inject_rpc_error("users.getFullUser", "INTERNAL", times=1000)
        started = time.monotonic()
        with pytest.raises(errors.ServerError, match="INTERNAL"):
            await client.telegram(functions.users.GetFullUserRequest(types.InputUserSelf()))
        assert time.monotonic() - started < 4.0 + 2.0
        assert len(mtproto_server.requests_for("users.getFullUser")) >= 2  # it was retried
        last_error = client.health().last_error
        assert last_error is not None
        assert "INTERNAL" in last_error
        assert "GetFullUserRequest" not in held_by_telethon(client)


async def test_probe_timeout_withdraws_the_probe(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy
) -> None:
    """Our own requests (send_raw) are withdrawn when their caller times out."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, keepalive=SLOW_KEEPALIVE) as (client, _rec):
        await client.wait_connected(10)
        fault_proxy.blackhole()
        with anyio.move_on_after(0.3) as scope:
            await _compat.send_raw(client.telegram, functions.help.GetNearestDcRequest())
        assert scope.cancelled_caught
        assert "GetNearestDcRequest" not in held_by_telethon(client)
        fault_proxy.heal()


async def test_a_new_link_starts_without_stale_frames_or_abandoned_requests() -> None:
    """start_link empties the connection's outgoing and incoming slots (frames of the dead
    link) and drops requests whose future is done (nobody waits for them)."""
    telegram = TelegramClient(MemorySession(), 1, "hash")
    _compat.check(telegram)
    conn: Any = ConnectionTcpFull("127.0.0.1", 1, 2, loggers=telegram._log)
    conn._send_queue.put_nowait(b"frame of the old link")
    conn._recv_queue.put_nowait((b"packet of the old link", None))
    sender = telegram._sender
    abandoned = RequestState(functions.help.GetNearestDcRequest())
    abandoned.future.cancel()
    waited = RequestState(functions.updates.GetStateRequest())
    sent_abandoned = RequestState(functions.help.GetConfigRequest())
    sent_abandoned.msg_id = 1234
    sent_abandoned.future.cancel()
    sender._send_queue.extend([abandoned, waited])
    sender._pending_state[1234] = sent_abandoned
    _compat.start_link(telegram, conn)
    assert conn._send_queue.empty()
    assert conn._recv_queue.empty()
    assert list(sender._send_queue._deque) == [waited]
    assert sender._pending_state == {}
    # withdraw tells a queued request from one that had a msg_id
    assert _compat.withdraw(telegram, waited.request) == _compat.QUEUED
    sender._pending_state[99] = waited
    waited.msg_id = 99
    assert _compat.withdraw(telegram, waited.request) == _compat.SENT
    assert _compat.withdraw(telegram, waited.request) is None
    assert waited.future.cancelled()


async def test_requests_in_flight_when_the_client_closes_end_at_once(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, request_path: bool
) -> None:
    """Leaving the client ends its callers' requests now, each with its true ending: one
    sent on a dead link is ResultUnknownError, one never sent is NotConnectedError."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, fault_proxy.port, user=alice)
    async with running(store, mtproto_server, keepalive=SLOW_KEEPALIVE, request_timeout=30.0) as (
        client,
        rec,
    ):
        await client.wait_connected(10)
        peer = types.InputPeerUser(bob.id, bob.access_hash)
        fault_proxy.blackhole()
        sent = asyncio.ensure_future(client.telegram.send_message(peer, "sent"))
        await wait_until(
            lambda: any(
                isinstance(state.request, functions.messages.SendMessageRequest)
                for state in client.telegram._sender._pending_state.values()
            )
        )
        fault_proxy.refuse(math.inf)
        fault_proxy.reset()
        await rec.left(S.CONNECTED)
        queued = asyncio.ensure_future(client.telegram(functions.help.GetNearestDcRequest()))
        await wait_until(lambda: "GetNearestDcRequest" in held_by_telethon(client))
        closing = time.monotonic()
    done, _ = await asyncio.wait([sent, queued], timeout=10)
    assert time.monotonic() - closing < 10
    assert done == {sent, queued}
    assert isinstance(sent.exception(), ResultUnknownError)
    assert isinstance(queued.exception(), NotConnectedError)
    assert stored_texts(mtproto_server, alice) == {}
