"""`check`: fail loudly, naming what is missing, when a Telethon release moves an internal
this package relies on."""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
from typing import Any

import telethon
from telethon import TelegramClient
from telethon.network import ConnectionTcpFull, MTProtoSender
from telethon.network.requeststate import RequestState

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
    """The internals `withdraw`, `start_link` and `send_first` rely on."""
    sender = getattr(client, "_sender", None)
    packer = getattr(sender, "_send_queue", None)
    slots = set(getattr(RequestState, "__slots__", ()))
    return [
        (
            "MTProtoSender._send_queue._deque/_ready",
            hasattr(packer, "_deque") and hasattr(packer, "_ready"),
        ),
        ("MTProtoSender._pending_state", isinstance(getattr(sender, "_pending_state", None), dict)),
        ("MTProtoSender._connection", hasattr(sender, "_connection")),
        (
            "MTProtoSender._reconnecting/_reconnect_task/_user_connected",
            all(
                hasattr(sender, a) for a in ("_reconnecting", "_reconnect_task", "_user_connected")
            ),
        ),
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
    "_mb_entity_cache",
    "_dispatch_update",  # watch_dispatch
    "_preprocess_updates",
    "_sequential_updates",
    "_event_handler_tasks",  # handlers_idle
    "_updates_queue",
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


_BOX_METHODS = (
    "get_difference",
    "get_channel_difference",
    "apply_channel_difference",
    "apply_pts_info",
    "apply_difference",
    "end_difference",
    "end_channel_difference",
    "process_updates",
    "try_set_channel_state",
)


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
        ("MessageBox.map", isinstance(getattr(instance, "map", None), dict)),
        ("messagebox.ENTRY_ACCOUNT", hasattr(messagebox, "ENTRY_ACCOUNT")),
        ("messagebox.PrematureEndReason", hasattr(messagebox, "PrematureEndReason")),
        ("MessageBox.getting_diff_for", isinstance(getattr(instance, "getting_diff_for", 0), set)),
    ]
