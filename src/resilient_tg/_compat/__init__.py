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

from ._box import (
    BrokenChannel,
    GapMark,
    account_state,
    box_pts,
    box_state,
    box_update_states,
    feed_gap,
    follow_channel,
    install_gap_box,
    is_box_account_request,
    is_box_channel_request,
    last_account_message,
    last_channel_message,
    set_update_feed,
)
from ._check import (
    TelethonCompatError,
    check,
)
from ._dcs import (
    TelethonHooks,
    abort_sender_link,
    clean_exported,
    close_exported,
    close_unconnected_exported,
    dc_address,
    drop_main_link,
    exported_call,
    forget_exported,
    has_exported,
    main_call,
    main_connection,
)
from ._links import (
    QUEUED,
    SENT,
    Withdrawn,
    clear_stale_reconnect,
    clock_offset,
    differences_ended,
    dispatch_orphans,
    drop_link,
    drop_stale_packets,
    end_queued,
    fetching_difference,
    forget_auth_key,
    handlers_idle,
    link_streams,
    local_pts,
    queued_requests,
    save_states,
    save_states_now,
    send_first,
    send_nowait,
    send_raw,
    sender_user_connected,
    start_link,
    stop_telethon_keepalive,
    updates_error,
    watch_dispatch,
    withdraw,
)

__all__ = [
    "QUEUED",
    "SENT",
    "BrokenChannel",
    "GapMark",
    "TelethonCompatError",
    "TelethonHooks",
    "Withdrawn",
    "abort_sender_link",
    "account_state",
    "box_pts",
    "box_state",
    "box_update_states",
    "check",
    "clean_exported",
    "clear_stale_reconnect",
    "clock_offset",
    "close_exported",
    "close_unconnected_exported",
    "dc_address",
    "differences_ended",
    "dispatch_orphans",
    "drop_link",
    "drop_main_link",
    "drop_stale_packets",
    "end_queued",
    "exported_call",
    "feed_gap",
    "fetching_difference",
    "follow_channel",
    "forget_auth_key",
    "forget_exported",
    "handlers_idle",
    "has_exported",
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
    "save_states_now",
    "send_first",
    "send_nowait",
    "send_raw",
    "sender_user_connected",
    "set_update_feed",
    "start_link",
    "stop_telethon_keepalive",
    "updates_error",
    "watch_dispatch",
    "withdraw",
]
