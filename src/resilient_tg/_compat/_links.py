"""The main sender's link and requests: what is queued, pending or written, taking a
request back, starting and dropping a link, pings without a task, saving the state."""

from __future__ import annotations

import asyncio
from typing import Any

from telethon.network.requeststate import RequestState
from telethon.tl.tlobject import TLRequest

# What `withdraw` found: the request waited in the send queue and was never given a
# msg_id (never written to any link), or it had been given one (written, or about to be).
QUEUED = "queued"
SENT = "sent"


def link_streams(conn: Any) -> tuple[Any, Any]:
    """The asyncio reader and writer of a Telethon connection (None while unconnected)."""
    return getattr(conn, "_reader", None), getattr(conn, "_writer", None)


def drop_stale_packets(conn: Any) -> None:
    """Empty the connection's incoming slot: a packet or an error the previous link's read
    loop queued must not be read as the new link's (Telethon reuses the object)."""
    queue = conn._recv_queue
    while not queue.empty():
        queue.get_nowait()


def local_pts(client: Any) -> int | None:
    """The account pts Telethon has applied (None before it has any update state)."""
    box = client._message_box
    if box.is_empty():
        return None
    state, _channels = box.session_state()
    return int(state["pts"])


def differences_ended(client: Any) -> int:
    """How many account getDifference rounds Telethon's update loop has finished
    (answered or given up): grows once a `catch_up` it was asked for has run."""
    return int(getattr(client._message_box, "rtg_ended", 0))


def fetching_difference(client: Any) -> bool:
    """True while Telethon's update loop has a difference to fetch (account or channel)."""
    return bool(client._message_box.getting_diff_for)


async def save_states(client: Any) -> None:
    """Write Telethon's applied update state and its entity cache into the session."""
    await client._save_states_and_entities()


def updates_error(client: Any) -> BaseException | None:
    """Why Telethon's update loop disconnected the client, if it did."""
    error = getattr(client, "_updates_error", None)
    return error if isinstance(error, BaseException) else None


def sender_user_connected(client: Any) -> bool:
    """True from a successful ``connect()`` until ``disconnect()``, outages included."""
    return bool(client.is_connected())


async def send_raw(client: Any, request: Any) -> Any:
    """Send through the sender alone: no entity processing, no flood-wait bookkeeping and
    none of TelegramClient's 2 s pause after a 500 (our probes and pings time themselves).

    Cancelled (a timeout of the caller's), the request is withdrawn: it is never resent
    after a reconnect, and a late answer finds nothing to complete."""
    future = client._sender.send(request)
    try:
        return await future
    except asyncio.CancelledError:
        withdraw(client, request)
        raise


def queued_requests(client: Any) -> int:
    """How many requests the sender holds for a link: queued, or sent and unanswered
    (a few acks and pings included)."""
    sender = client._sender
    return len(sender._send_queue._deque) + len(sender._pending_state)


def _is_target(request: Any, targets: tuple[Any, ...]) -> bool:
    while True:
        for target in targets:
            if request is target:
                return True
        inner = getattr(request, "query", None)  # InvokeWithoutUpdates and kin wrap it
        if not isinstance(inner, TLRequest):
            return False
        request = inner


def withdraw(client: Any, request: Any, sender: Any = None) -> str | None:
    """Take ``request`` (or each request of a list) back from every place the sender
    (the main one, or ``sender``) keeps it, so it is never written, or never resent.
    Returns `SENT` if one had been given a msg_id (it may have been written), `QUEUED`
    if it only waited in the send queue, None if it was in neither (answered, or not
    handed to the sender yet).

    Costs a scan of the send queue and the pending states: call it only for a request
    that ends without its answer."""
    sender = sender if sender is not None else client._sender
    targets = tuple(request) if isinstance(request, (list, tuple)) else (request,)
    found: str | None = None
    queue = sender._send_queue._deque
    taken = [state for state in queue if _is_target(state.request, targets)]
    for state in taken:
        queue.remove(state)
        found = SENT if state.msg_id is not None or found == SENT else QUEUED
        _forget(state)
    pending = sender._pending_state
    for msg_id in [k for k, state in pending.items() if _is_target(state.request, targets)]:
        _forget(pending.pop(msg_id))
        found = SENT
    return found


def _forget(state: Any) -> None:
    future = state.future
    if not future.done():
        future.cancel()


class Withdrawn(ConnectionError):
    """Set by `end_queued` on a request still in the send queue when the client stops
    (a ConnectionError, so Telethon's own connect() takes it as a lost connection)."""

    def __init__(self, sent: bool) -> None:
        super().__init__("the client stopped before this request was answered")
        self.sent = sent  # it had been given a msg_id on a link that died


def end_queued(client: Any) -> None:
    """After a full disconnect: end every request still in the send queue (Telethon
    cancels only its pending ones), so that its caller hears it now, not at its deadline,
    and nothing stale is sent by a later connect()."""
    queue = client._sender._send_queue._deque
    kept = []
    for state in queue:
        future = state.future
        if not isinstance(state.request, TLRequest):
            kept.append(state)  # acks and the like: nobody waits for them
        elif not future.done():
            future.set_exception(Withdrawn(state.msg_id is not None))
            future.exception()  # its waiter (if any) re-raises it; never logged as lost
    queue.clear()
    queue.extend(kept)


def start_link(client: Any, conn: Any) -> None:
    """A new link of ``client``'s main sender starts on ``conn``; call it before anything
    is sent on it. Empties the connection's outgoing slot (a frame encrypted for the dead
    link would go out under the old session id) and its incoming slot (a packet or an
    error of the dead link), and drops every request nobody waits for any more (its
    future is done), so that it is not resent."""
    for queue in (conn._send_queue, conn._recv_queue):
        while not queue.empty():
            queue.get_nowait()
    sender = client._sender
    queue = sender._send_queue._deque
    if any(state.future.done() for state in queue):
        kept = [state for state in queue if not state.future.done()]
        queue.clear()
        queue.extend(kept)
    pending = sender._pending_state
    for msg_id in [k for k, state in pending.items() if state.future.done()]:
        del pending[msg_id]


def send_first(client: Any, request: Any) -> Any:
    """Put ``request`` at the head of the main sender's queue and return its future: the
    first message a link that is just up carries, even while Telethon's connect() runs
    (its send() refuses until connect() has finished)."""
    state = RequestState(request)
    packer = client._sender._send_queue
    packer._deque.appendleft(state)
    packer._ready.set()
    return state.future


def clear_stale_reconnect(client: Any) -> bool:
    """Before a connect() of ours: clear the sender's ``_reconnecting`` flag if no
    reconnect task of Telethon's is alive to clear it. Telethon sets it when a link
    breaks and only its reconnect task resets it; a task cancelled before its first step
    (a disconnect() right after the break, as the lease recovery does) leaves it set, and
    then every later link's send and receive loops end at once: nothing is sent or read.
    True if it was stale."""
    sender = client._sender
    task = sender._reconnect_task
    if not sender._reconnecting or sender._user_connected or (task and not task.done()):
        return False
    sender._reconnecting = False
    return True


async def drop_link(client: Any) -> None:
    """Close the sender's link and its loops, without TelegramClient.disconnect()'s session
    close and state write: for a connect() that failed with the link still open."""
    await client._sender.disconnect()


def handlers_idle(client: Any) -> bool:
    """No update waits in Telethon's queue, none was taken without being handed to its
    handlers yet, and no event handler runs (as a task, or inside the update loop with
    ``sequential_updates=True``): see `watch_dispatch`."""
    queue = getattr(client, "_updates_queue", None)
    tasks = getattr(client, "_event_handler_tasks", ())
    return (
        (queue is None or queue.empty())
        and not tasks
        and not getattr(client, "_rtg_dispatching", 0)
        and not getattr(client, "_rtg_undispatched", None)
    )


def watch_dispatch(client: Any) -> None:
    """Follow every update from the moment Telethon's update loop takes it (the message
    box's pts moves then) until its handlers have run, so that `handlers_idle` covers the
    whole way.

    The loop (updates.py ``_update_loop``) applies a batch to the message box, keeps the
    updates in a local deque (after ``_preprocess_updates``) and only then hands each to
    ``_dispatch_update``: as a task, or awaited in the loop with ``sequential_updates``.
    A link that goes down in between ends the loop (``while self.is_connected()``) with
    updates taken but never dispatched, although the box counts them as applied: a
    stored pts would then skip them for good, and so would the next link's catch-up.
    They are remembered here (with the loop that took them) until dispatched;
    `dispatch_orphans` hands those of a loop that has ended to the handlers."""
    preprocess, original = client._preprocess_updates, client._dispatch_update
    client._rtg_dispatching = 0
    client._rtg_undispatched = {}  # id(update) -> (update, the loop task that took it)

    async def take(updates: Any, users: Any, chats: Any) -> Any:
        taken = await preprocess(updates, users, chats)
        loop_task = asyncio.current_task()
        for update in taken:
            client._rtg_undispatched[id(update)] = (update, loop_task)
        return taken

    async def run(update: Any) -> Any:
        client._rtg_dispatching += 1
        try:
            return await original(update)
        finally:
            client._rtg_dispatching -= 1

    def dispatch(update: Any) -> Any:
        client._rtg_undispatched.pop(id(update), None)  # called as the loop hands it on
        return run(update)

    client._preprocess_updates = take
    client._dispatch_update = dispatch


def dispatch_orphans(client: Any) -> int:
    """Hand to the handlers (as tasks, like Telethon's default) the updates an update loop
    took but had not dispatched when it ended; return how many."""
    undispatched = getattr(client, "_rtg_undispatched", None)
    if not undispatched:
        return 0
    orphans = [u for u, task in list(undispatched.values()) if task is None or task.done()]
    for update in orphans:
        task = asyncio.get_running_loop().create_task(client._dispatch_update(update))
        client._event_handler_tasks.add(task)
        task.add_done_callback(client._event_handler_tasks.discard)
    return len(orphans)


def forget_auth_key(client: Any) -> None:
    """Drop the key the sender holds, so that the next connect creates a new one."""
    client._sender.auth_key.key = None
    client.session.auth_key = client._sender.auth_key


def clock_offset(client: Any) -> float | None:
    """Telethon's estimate of server time minus local time, in seconds."""
    state = getattr(getattr(client, "_sender", None), "_state", None)
    offset = getattr(state, "time_offset", None)
    return float(offset) if isinstance(offset, (int, float)) else None


def send_nowait(client: Any, request: Any) -> Any:
    """Hand ``request`` to the main sender and return its future (no task, no await):
    the keepalive's pings. Raises ConnectionError while the sender is disconnecting."""
    return client._sender.send(request)


def stop_telethon_keepalive(client: Any) -> bool:
    """End Telethon's own ping loop (one task per client, a plain ping every 60 s and a
    session save): our keepalive pings far more often, and our flush saves the state.
    True if a running loop was stopped."""
    handle = getattr(client, "_keepalive_handle", None)
    if handle is None or handle.done():
        return False
    handle.cancel()
    return True


def save_states_now(client: Any) -> bool:
    """`save_states` without awaiting, where the session's methods are plain functions (a
    StoreSession): True if done, False if it would have to wait (then call save_states).
    Where the session can tell that the save would change nothing (an idle client, every
    second), nothing is built: Telethon's save makes a dozen objects each time."""
    matches = getattr(client.session, "update_state_matches", None)
    if matches is not None:
        state, channels = client._message_box.session_state()
        if matches(client._mb_entity_cache.self_id, state, channels):
            return True
    coroutine = client._save_states_and_entities()
    try:
        coroutine.send(None)
    except StopIteration:
        return True
    coroutine.close()
    return False
