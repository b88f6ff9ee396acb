"""Every use of Telethon internals, in one place, checked against the installed version.

Telethon 1.x offers no public way to read the update state it has applied, to write
it to the session before its 60 s keepalive, to see why its update loop gave up, to
read its clock offset, or to take back a request nobody waits for. These helpers do,
and `check` fails loudly (at client construction and in our test suite) when a
Telethon release moves them.

Where Telethon keeps a request (1.40-1.45): its sender's send queue
(``_sender._send_queue``, a MessagePacker whose ``_deque`` holds RequestStates not yet
given a msg_id in this link), then, once packed and encrypted, ``_sender._pending_state``
(msg_id -> RequestState) until its answer, and the frame itself in the connection's
outgoing slot (``Connection._send_queue``, one frame) until it is written to the
socket. After a reconnect the sender moves every pending state back to its send queue
(with its old msg_id still set), so it is resent.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import weakref
from typing import Any

import telethon
from telethon import TelegramClient
from telethon.network import ConnectionTcpFull, MTProtoSender
from telethon.network.requeststate import RequestState
from telethon.tl import functions
from telethon.tl.alltlobjects import LAYER
from telethon.tl.tlobject import TLRequest

__all__ = [
    "TelethonCompatError",
    "TelethonHooks",
    "Withdrawn",
    "abort_sender_link",
    "account_state",
    "check",
    "clock_offset",
    "close_exported",
    "close_unconnected_exported",
    "dc_address",
    "differences_ended",
    "drop_link",
    "drop_main_link",
    "drop_stale_packets",
    "end_queued",
    "exported_call",
    "fetching_difference",
    "forget_auth_key",
    "forget_exported",
    "handlers_idle",
    "install_gap_box",
    "is_box_account_request",
    "is_box_channel_request",
    "last_account_message",
    "last_channel_message",
    "link_streams",
    "local_pts",
    "main_call",
    "main_connection",
    "queued_requests",
    "save_states",
    "send_raw",
    "sender_user_connected",
    "start_link",
    "updates_error",
    "withdraw",
]

# What `withdraw` found: the request waited in the send queue and was never given a
# msg_id (never written to any link), or it had been given one (written, or about to be).
QUEUED = "queued"
SENT = "sent"

TESTED_MAJOR = 1


class TelethonCompatError(RuntimeError):
    """The installed Telethon lacks an internal this library relies on."""


def check(client: Any) -> None:
    """Raise TelethonCompatError naming what is missing on this Telethon version."""
    version = getattr(telethon, "__version__", "?")
    if not str(version).startswith(f"{TESTED_MAJOR}."):
        raise TelethonCompatError(f"resilient_tg supports Telethon 1.x, found {version}")
    missing = [
        name
        for name, ok in (
            ("TelegramClient._message_box", hasattr(client, "_message_box")),
            (
                "TelegramClient._save_states_and_entities",
                hasattr(client, "_save_states_and_entities"),
            ),
            ("TelegramClient._sender", hasattr(client, "_sender")),
            (
                "MTProtoSender.disconnect",
                callable(getattr(getattr(client, "_sender", None), "disconnect", None)),
            ),
            (
                "MessageBox.session_state",
                hasattr(getattr(client, "_message_box", None), "session_state"),
            ),
            ("MessageBox.is_empty", hasattr(getattr(client, "_message_box", None), "is_empty")),
            *_box_internals(client),
            *_request_internals(client),
            *_dc_internals(),
            *((f"TelegramClient.{a}", hasattr(client, a)) for a in _CLIENT_ATTRIBUTES),
        )
        if not ok
    ]
    if missing:
        raise TelethonCompatError(
            f"Telethon {version} lacks {', '.join(missing)}; this resilient_tg release was "
            "tested with Telethon 1.40-1.45"
        )


def _request_internals(client: Any) -> list[tuple[str, bool]]:
    """The internals `withdraw` and `start_link` rely on."""
    sender = getattr(client, "_sender", None)
    packer = getattr(sender, "_send_queue", None)
    slots = set(getattr(RequestState, "__slots__", ()))
    return [
        ("MTProtoSender._send_queue._deque", hasattr(packer, "_deque")),
        ("MTProtoSender._pending_state", isinstance(getattr(sender, "_pending_state", None), dict)),
        ("MTProtoSender._connection", hasattr(sender, "_connection")),
        ("RequestState.msg_id/request/future", {"msg_id", "request", "future"} <= slots),
        *_connection_internals(),
    ]


# Telethon methods `TelethonHooks` replaces or calls, with their parameters.
_HOOKED = (
    ("_switch_dc", "new_dc"),
    ("_get_dc", "dc_id", "cdn"),
    ("_disconnect",),
    ("_call", "sender", "request", "ordered", "flood_sleep_threshold"),
    ("_borrow_exported_sender", "dc_id"),
    ("_create_exported_sender", "dc_id"),
)
# What `TelethonHooks._create_exported_sender` and `close_unconnected_exported` read.
_CLIENT_ATTRIBUTES = (
    "_borrowed_senders",
    "_borrow_sender_lock",
    "_init_request",
    "_connection",
    "_timeout",
    "_proxy",
    "_local_addr",
    "_log",
    "_keepalive_handle",
    "_clean_exported_senders",
)


@functools.cache
def _dc_internals() -> tuple[tuple[str, bool], ...]:
    """What `TelethonHooks` relies on: Telethon's DC switch (called by its request loop on
    *_MIGRATE_X), its exported senders, and the link teardown."""
    from telethon.client.telegrambaseclient import _ExportState

    def coroutine(name: str, *params: str) -> bool:
        method = getattr(TelegramClient, name, None)
        if not inspect.iscoroutinefunction(method):
            return False
        return list(inspect.signature(method).parameters)[1:] == list(params)

    return (
        *((f"TelegramClient.{n}({', '.join(p)})", coroutine(n, *p)) for n, *p in _HOOKED),
        (
            "MTProtoSender(auth_key, loggers, connect_timeout)",
            {"auth_key", "loggers", "connect_timeout"}
            <= set(inspect.signature(MTProtoSender).parameters),
        ),
        ("_ExportState._connected", "_connected" in vars(_ExportState())),
    )


@functools.cache
def _connection_internals() -> tuple[tuple[str, bool], ...]:
    """What the connection class relies on (`start_link`, `link_streams`,
    `drop_stale_packets`); checked once per process on a connection that never connects."""
    loggers: Any = collections.defaultdict(lambda: logging.getLogger("telethon"))
    conn = ConnectionTcpFull("127.0.0.1", 0, 0, loggers=loggers)
    return (
        ("Connection._send_queue", isinstance(getattr(conn, "_send_queue", None), asyncio.Queue)),
        ("Connection._recv_queue", isinstance(getattr(conn, "_recv_queue", None), asyncio.Queue)),
        ("Connection._reader/_writer", hasattr(conn, "_reader") and hasattr(conn, "_writer")),
    )


# The message box ------------------------------------------------------------------------
# Telethon answers channelDifferenceTooLong by jumping to the server's pts and delivering
# nothing (_updates/messagebox.py, apply_channel_difference). To recover such a gap, the
# client needs two things the box does not offer: which getChannelDifference request the
# update loop is making (so that only its answer is handled), and the newest message id
# of each channel already handed to the handlers (where the gap starts). A subclass of
# MessageBox, put in place of the client's before it first connects, records both.

_BOX_METHODS = (
    "get_difference",
    "get_channel_difference",
    "apply_channel_difference",
    "apply_pts_info",
    "apply_difference",
    "end_difference",
)


@functools.cache
def _gap_box_class() -> Any:
    from telethon._updates.messagebox import MessageBox  # imported when checked
    from telethon.tl import types

    class GapAwareMessageBox(MessageBox):  # type: ignore[misc]  # Telethon is untyped
        """Telethon's MessageBox, noting each channel's newest applied message id and the
        channel-difference request being made."""

        __slots__ = (
            "rtg_account_request",
            "rtg_ended",
            "rtg_last_account",
            "rtg_last_ids",
            "rtg_request",
        )

        def __init__(self, log: Any) -> None:
            super().__init__(log)
            self.rtg_last_ids: dict[int, int] = {}
            self.rtg_last_account: int | None = None  # private chats and basic groups
            self.rtg_request: Any = None
            self.rtg_account_request: Any = None
            self.rtg_ended = 0  # account differences answered or given up

        def get_difference(self) -> Any:
            request = super().get_difference()
            self.rtg_account_request = request
            return request

        def apply_difference(self, diff: Any, chat_hashes: Any) -> Any:
            result = super().apply_difference(diff, chat_hashes)
            self.rtg_ended += 1
            for update in result[0]:
                self._rtg_note(update)
            return result

        def end_difference(self) -> None:
            super().end_difference()
            self.rtg_ended += 1

        def get_channel_difference(self, chat_hashes: Any) -> Any:
            request = super().get_channel_difference(chat_hashes)
            self.rtg_request = request
            return request

        def apply_pts_info(self, update: Any, *, reset_deadlines: Any) -> Any:
            applied = super().apply_pts_info(update, reset_deadlines=reset_deadlines)
            if applied is not None:
                self._rtg_note(applied)
            return applied

        def apply_channel_difference(self, request: Any, diff: Any, chat_hashes: Any) -> Any:
            result = super().apply_channel_difference(request, diff, chat_hashes)
            for update in result[0]:
                self._rtg_note(update)
            return result

        def _rtg_note(self, update: Any) -> None:
            if isinstance(update, _SHORT_MESSAGES):
                self._rtg_note_account(update.id)
            elif isinstance(update, types.UpdateNewMessage):
                self._rtg_note_account(getattr(update.message, "id", None))
            elif isinstance(update, types.UpdateNewChannelMessage):
                message = update.message
                channel = getattr(getattr(message, "peer_id", None), "channel_id", None)
                ident = getattr(message, "id", None)
                if isinstance(channel, int) and isinstance(ident, int):
                    self.rtg_last_ids[channel] = max(ident, self.rtg_last_ids.get(channel, 0))

        def _rtg_note_account(self, ident: Any) -> None:
            if isinstance(ident, int) and ident > (self.rtg_last_account or 0):
                self.rtg_last_account = ident

    _SHORT_MESSAGES = (
        types.UpdateShortMessage,
        types.UpdateShortChatMessage,
        types.UpdateShortSentMessage,
    )

    return GapAwareMessageBox


def _box_internals(client: Any) -> list[tuple[str, bool]]:
    """What `install_gap_box` relies on."""
    try:
        from telethon._updates import messagebox  # imported when checked
    except ImportError:
        return [("telethon._updates.messagebox", False)]
    box = getattr(messagebox, "MessageBox", None)
    instance = getattr(client, "_message_box", None)
    return [
        *((f"MessageBox.{name}", callable(getattr(box, name, None))) for name in _BOX_METHODS),
        ("MessageBox._log", hasattr(instance, "_log")),
        ("MessageBox.getting_diff_for", isinstance(getattr(instance, "getting_diff_for", 0), set)),
    ]


def install_gap_box(client: Any) -> None:
    """Put a GapAwareMessageBox in place of the client's (before its first connect)."""
    old = client._message_box
    if not old.is_empty():
        raise TelethonCompatError("the message box must be replaced before the client connects")
    client._message_box = _gap_box_class()(old._log)


def is_box_channel_request(client: Any, request: Any) -> bool:
    """True if ``request`` is the getChannelDifference the update loop is making."""
    return getattr(client._message_box, "rtg_request", None) is request


def is_box_account_request(client: Any, request: Any) -> bool:
    """True if ``request`` is the account getDifference the update loop is making."""
    return getattr(client._message_box, "rtg_account_request", None) is request


def last_account_message(client: Any) -> int | None:
    """The newest message id of the account's private chats and basic groups applied
    since the client was built (those ids are one sequence per account)."""
    return getattr(client._message_box, "rtg_last_account", None)


def account_state(client: Any) -> dict[str, Any]:
    """The account's applied update state: pts, qts, date and seq."""
    state, _channels = client._message_box.session_state()
    return dict(state)


def last_channel_message(client: Any, channel_id: int) -> int | None:
    """The newest message id of the channel applied since the client was built."""
    ids = getattr(client._message_box, "rtg_last_ids", None)
    return None if ids is None else ids.get(channel_id)


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


async def drop_link(client: Any) -> None:
    """Close the sender's link and its loops, without TelegramClient.disconnect()'s session
    close and state write: for a connect() that failed with the link still open."""
    await client._sender.disconnect()


def handlers_idle(client: Any) -> bool:
    """No update waits in Telethon's queue and no event handler task is running."""
    queue = getattr(client, "_updates_queue", None)
    tasks = getattr(client, "_event_handler_tasks", ())
    return (queue is None or queue.empty()) and not tasks


def forget_auth_key(client: Any) -> None:
    """Drop the key the sender holds, so that the next connect creates a new one."""
    client._sender.auth_key.key = None
    client.session.auth_key = client._sender.auth_key


def clock_offset(client: Any) -> float | None:
    """Telethon's estimate of server time minus local time, in seconds."""
    state = getattr(getattr(client, "_sender", None), "_state", None)
    offset = getattr(state, "time_offset", None)
    return float(offset) if isinstance(offset, (int, float)) else None


class TelethonHooks:
    """Mixin for the TelegramClient subclass, handing Telethon's DC work to the owner.

    On *_MIGRATE_X at login Telethon calls ``_switch_dc`` inside the request
    (``client/users.py``) and reconnects with a plain ``connect()`` in the caller's task;
    here the owner's ``_rtg_switch_dc`` (the supervisor) does the switch. Exported
    senders (links to other DCs, for downloads): borrowing goes to ``_rtg_borrow``,
    requests on them to ``_rtg_exported_call``; ``_create_exported_sender`` is Telethon's
    with the connect timed out and the sender tracked (`close_exported`). ``_get_dc``
    reads this client's own help.getConfig: Telethon caches it on the class, shared by
    the clients of every server in the process."""

    _rtg_config: Any = None
    _rtg_exported: weakref.WeakSet[Any] | None = None

    # Telethon's own behaviour, for an instance without an owner (Telethon's CDN client
    # is built from the client's class): the subclass overrides these.
    async def _rtg_switch_dc(self, new_dc: int) -> None:
        await TelegramClient._switch_dc(self, new_dc)

    async def _rtg_borrow(self, dc_id: int, borrow: Any) -> Any:
        return await borrow(dc_id)

    async def _rtg_exported_call(self, sender: Any, request: Any, ordered: bool) -> Any:
        return await exported_call(self, sender, request, ordered)

    def _rtg_main_call(self, request: Any, ordered: bool) -> Any:
        return main_call(self, request, ordered)

    async def _switch_dc(self, new_dc: int) -> None:
        await self._rtg_switch_dc(int(new_dc))

    def _call(
        self, sender: Any, request: Any, ordered: bool = False, flood_sleep_threshold: Any = None
    ) -> Any:
        # Only Telethon's downloads call this directly (the request gate sends through
        # `main_call`): on the main sender they take the gate, on another its bounds.
        if sender is getattr(self, "_sender", None):
            return self._rtg_main_call(request, ordered)
        return self._rtg_exported_call(sender, request, ordered)

    async def _borrow_exported_sender(self, dc_id: int) -> Any:
        return await self._rtg_borrow(dc_id, super()._borrow_exported_sender)  # type: ignore[misc]

    async def _create_exported_sender(self, dc_id: int) -> Any:
        """Telethon's (telegrambaseclient.py), with the sender's connect timed out like the
        main link's, and closed again if anything after its connect fails or is cancelled."""
        me: Any = self
        dc = await self._get_dc(dc_id)
        # Telethon's own reconnect pacing (5 tries, 1 s apart): not the main link's
        # policy, which has no end; the owner bounds each request on it.
        sender = MTProtoSender(None, loggers=me._log, connect_timeout=me._timeout)
        if self._rtg_exported is None:
            self._rtg_exported = weakref.WeakSet()
        self._rtg_exported.add(sender)
        try:
            await sender.connect(
                me._connection(
                    dc.ip_address,
                    dc.port,
                    dc.id,
                    loggers=me._log,
                    proxy=me._proxy,
                    local_addr=me._local_addr,
                )
            )
            auth = await me(functions.auth.ExportAuthorizationRequest(dc_id))
            me._init_request.query = functions.auth.ImportAuthorizationRequest(
                id=auth.id, bytes=auth.bytes
            )
            await sender.send(functions.InvokeWithLayerRequest(LAYER, me._init_request))
        except BaseException:
            self._rtg_exported.discard(sender)
            await asyncio.shield(_close_sender(sender))
            raise
        return sender

    async def _get_dc(self, dc_id: int, cdn: bool = False) -> Any:
        if cdn:
            return await super()._get_dc(dc_id, cdn)  # type: ignore[misc]
        for fresh in (False, True):
            if self._rtg_config is None or fresh:
                self._rtg_config = await self(functions.help.GetConfigRequest())  # type: ignore[operator]
            option = _pick_dc(self._rtg_config, dc_id, bool(getattr(self, "_use_ipv6", False)))
            if option is not None:
                return option
        raise ValueError(f"the server lists no address for DC {dc_id} in help.getConfig")


def _pick_dc(config: Any, dc_id: int, ipv6: bool) -> Any:
    """DC ``dc_id``'s option: not CDN nor media-only, of the asked family if listed."""
    options = [
        o
        for o in getattr(config, "dc_options", ())
        if o.id == dc_id and not o.cdn and not getattr(o, "media_only", False)
    ]
    for option in options:
        if bool(option.ipv6) == ipv6:
            return option
    return options[0] if options else None


async def dc_address(client: Any, dc_id: int) -> tuple[str, int]:
    """(ip, port) of ``dc_id`` from the server's help.getConfig (see `TelethonHooks`)."""
    option = await client._get_dc(dc_id)
    return str(option.ip_address), int(option.port)


async def drop_main_link(client: Any) -> None:
    """Close the main link and stop Telethon's update and keepalive loops, keeping the
    session open (as Telethon's DC switch does); queued requests wait for connect()."""
    await client._disconnect()


def main_connection(client: Any) -> Any:
    """The connection object of the client's main sender (None before any connect)."""
    sender = getattr(client, "_sender", None)
    return getattr(sender, "_connection", None)


def main_call(client: Any, request: Any, ordered: bool) -> Any:
    """Telethon's ``__call__`` on the main sender, as a coroutine (the gate's try)."""
    return TelegramClient._call(client, client._sender, request, ordered=ordered)


async def exported_call(client: Any, sender: Any, request: Any, ordered: bool) -> Any:
    """Telethon's own request path on an exported sender."""
    return await TelegramClient._call(client, sender, request, ordered=ordered)


def abort_sender_link(sender: Any, error: BaseException) -> bool:
    """Close an exported sender's socket (Telethon then reconnects and resends)."""
    conn = getattr(sender, "_connection", None)
    abort = getattr(conn, "abort", None)
    if abort is None or not getattr(conn, "_connected", False):
        return False
    abort(error)
    return True


async def _close_sender(sender: Any) -> None:
    try:
        await sender.disconnect()
    except Exception:  # noqa: BLE001 - Telethon's disconnect "should never raise"
        logging.getLogger("resilient_tg.client").debug("closing an exported sender failed")


async def forget_exported(client: Any, sender: Any) -> None:
    """Close an exported sender whose link failed us; the next borrow connects it anew."""
    await _close_sender(sender)
    for state, borrowed in list(getattr(client, "_borrowed_senders", {}).values()):
        if borrowed is sender:
            state._connected = False  # as Telethon's disconnect() does for a borrowed one


async def close_unconnected_exported(client: Any) -> None:
    """After a cut-short borrow: close the senders it left half-connected."""
    async with client._borrow_sender_lock:
        for state, sender in list(client._borrowed_senders.values()):
            if not sender.is_connected() and getattr(sender, "_connection", None) is not None:
                await _close_sender(sender)
                state._connected = False


async def close_exported(client: Any) -> None:
    """Close every exported sender this client opened that is still open."""
    tracked = getattr(client, "_rtg_exported", None)
    for sender in list(tracked or ()):
        if sender.is_connected() or getattr(sender, "_connection", None) is not None:
            await _close_sender(sender)


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


def has_exported(client: Any) -> bool:
    """Whether senders to other DCs exist (Telethon's keepalive loop cleaned them up)."""
    return bool(getattr(client, "_borrowed_senders", None))


async def clean_exported(client: Any) -> None:
    """Disconnect exported senders nobody borrowed for a while (what Telethon's keepalive
    loop did every 60 s)."""
    await client._clean_exported_senders()


def save_states_now(client: Any) -> bool:
    """`save_states` without awaiting, where the session's methods are plain functions (a
    StoreSession): True if done, False if it would have to wait (then call save_states)."""
    coroutine = client._save_states_and_entities()
    try:
        coroutine.send(None)
    except StopIteration:
        return True
    coroutine.close()
    return False
