"""The stored update state never covers an update whose handler has not finished: an
update whose handler was cancelled by leaving is delivered again on the next start
(at-least-once), one whose handler finished is not."""

from __future__ import annotations

import asyncio
import datetime

import anyio
import pytest
from telethon import events
from telethon.tl import types

from resilient_tg import ConnectionState, _compat
from resilient_tg.stores import MemoryStore
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import running, seeded_store
from .conftest import STEP_TIMEOUT, wait_until

pytestmark = pytest.mark.anyio


async def stored_pts(store: MemoryStore) -> int:
    data = await store.load()
    return 0 if data is None or data.update_state is None else data.update_state.pts


@pytest.mark.parametrize("sequential", [False, True], ids=["tasks", "sequential_updates"])
async def test_an_update_whose_handler_was_cancelled_by_leaving_comes_again(
    mtproto_server: MTProtoTestServer, sequential: bool
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, user=alice)
    seen: list[str] = []
    stuck = asyncio.Event()
    async with running(
        store,
        mtproto_server,
        flush_interval=0.1,
        shutdown_timeout=2.0,
        sequential_updates=sequential,
    ) as (
        client,
        _,
    ):

        @client.telegram.on(events.NewMessage(incoming=True))
        async def handler(event: events.NewMessage.Event) -> None:
            seen.append(event.raw_text)
            if event.raw_text == "stuck":
                stuck.set()
                await asyncio.Event().wait()  # never finishes: leaving cancels it

        await client.wait_connected(STEP_TIMEOUT)
        before = await stored_pts(store)
        await mtproto_server.send_message(bob.id, alice.id, "first")
        await wait_until(lambda: "first" in seen)
        with anyio.fail_after(STEP_TIMEOUT):  # a periodic flush stores "first" as handled
            while await stored_pts(store) <= before:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.02)
        await mtproto_server.send_message(bob.id, alice.id, "stuck")
        await stuck.wait()
    again: list[str] = []
    async with running(store, mtproto_server) as (client, _):

        @client.on(events.NewMessage(incoming=True))
        async def second(event: events.NewMessage.Event) -> None:
            again.append(event.raw_text)

        await client.wait_connected(STEP_TIMEOUT)
        await wait_until(lambda: "stuck" in again)
        await client.telegram.get_me()  # a round trip: a late "first" would be here by now
    assert again == ["stuck"]


async def test_an_update_its_update_loop_took_but_never_dispatched_is_handled_after_reconnect(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Telethon's update loop applies a batch to the message box (the pts moves), keeps
    the updates in a local deque and only then dispatches them; a link that goes down in
    between ends the loop with updates taken and never dispatched. Such an update holds
    the stored update state back, and is handed to the handlers on the next link."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    seen: list[str] = []
    async with (
        FaultProxy(mtproto_server.host, mtproto_server.port) as proxy,
        running(seeded_store(mtproto_server, proxy.port, user=alice), mtproto_server) as (
            client,
            rec,
        ),
    ):

        @client.telegram.on(events.NewMessage(incoming=True))
        async def handler(event: events.NewMessage.Event) -> None:
            seen.append(event.raw_text)

        await client.wait_connected(STEP_TIMEOUT)
        telegram = client.telegram
        update = types.UpdateNewMessage(
            message=types.Message(
                id=10_000,
                peer_id=types.PeerUser(bob.id),
                from_id=types.PeerUser(bob.id),
                date=datetime.datetime.now(tz=datetime.timezone.utc),
                message="taken, never dispatched",
            ),
            pts=0,
            pts_count=0,
        )

        async def a_loop_that_ends_before_dispatching() -> None:
            await telegram._preprocess_updates([update], [], [])

        async with anyio.create_task_group() as group:  # the "loop" ends here
            group.start_soon(a_loop_that_ends_before_dispatching)
        assert not _compat.handlers_idle(telegram)  # the stored pts may not pass it
        assert "taken, never dispatched" not in seen

        proxy.reset()  # the next link hands it over
        await rec.left(ConnectionState.CONNECTED)
        await client.wait_connected(STEP_TIMEOUT)
        await wait_until(lambda: "taken, never dispatched" in seen)
        await wait_until(lambda: _compat.handlers_idle(telegram))
    assert seen.count("taken, never dispatched") == 1


async def test_a_handler_running_when_telethon_gives_the_link_up_finishes_and_runs_once(
    mtproto_server: MTProtoTestServer,
) -> None:
    """A transport flood (-429) is the one transport error Telethon does not reconnect
    from by itself: it ends the link, and the client dials again with connect(). A
    handler still running then finishes (it is not cancelled with the link), and its
    update is not fetched and handled again on the new link (the stored update state,
    still behind it, is not where the new link starts)."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    store = seeded_store(mtproto_server, user=alice)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []
    finished: list[str] = []
    async with running(store, mtproto_server) as (client, recorder):

        @client.on(events.NewMessage(incoming=True))
        async def handler(event: events.NewMessage.Event) -> None:
            calls.append(event.raw_text)
            started.set()
            await release.wait()
            finished.append(event.raw_text)

        await client.wait_connected(STEP_TIMEOUT)
        await mtproto_server.send_message(bob.id, alice.id, "slow")
        with anyio.fail_after(STEP_TIMEOUT):
            await started.wait()
        recorder.changes.clear()
        assert mtproto_server.send_transport_error(-429) == 1
        await recorder.until(lambda: ConnectionState.RECONNECTING in recorder.states())
        await recorder.state(ConnectionState.CONNECTED)
        assert any("429" in change.detail for change in recorder.changes), recorder.changes
        await mtproto_server.send_message(bob.id, alice.id, "after")
        await wait_until(lambda: "after" in calls)  # the new link's updates flow
        release.set()
        await wait_until(lambda: sorted(finished) == ["after", "slow"])
        await wait_until(lambda: _compat.handlers_idle(client.telegram))
    assert calls == ["slow", "after"]
