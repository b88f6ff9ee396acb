"""Every use of Telethon internals, in one place, checked against the installed version.

Telethon 1.x offers no public way to read the update state it has applied, to write
it to the session before its 60 s keepalive, to see why its update loop gave up, or
to read its clock offset. These helpers do, and `check` fails loudly (at client
construction and in our test suite) when a Telethon release moves them.
"""

from __future__ import annotations

from typing import Any

import telethon

__all__ = [
    "TelethonCompatError",
    "check",
    "clock_offset",
    "drop_link",
    "forget_auth_key",
    "handlers_idle",
    "local_pts",
    "save_states",
    "send_raw",
    "sender_user_connected",
    "updates_error",
]

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
        )
        if not ok
    ]
    if missing:
        raise TelethonCompatError(
            f"Telethon {version} lacks {', '.join(missing)}; this resilient_tg release was "
            "tested with Telethon 1.40-1.45"
        )


def local_pts(client: Any) -> int | None:
    """The account pts Telethon has applied (None before it has any update state)."""
    box = client._message_box
    if box.is_empty():
        return None
    state, _channels = box.session_state()
    return int(state["pts"])


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
    none of TelegramClient's 2 s pause after a 500 (our probes and pings time themselves)."""
    return await client._sender.send(request)


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
