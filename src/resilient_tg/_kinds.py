"""How the client sorts and words errors: the error families it treats alike, the
StateReason a link failure maps to, and one-line descriptions for logs and health.

Shared by the client's parts (supervisor, post-connect, request gate), which must not
import each other's modules for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telethon import errors

from ._connection import LinkAborted, PeerProtocolError
from ._fatal import rpc_name
from ._state import StateReason

__all__ = [
    "FLOOD",
    "KEY_DEAD",
    "TRANSIENT_RPC",
    "address",
    "classify",
    "dc_of",
    "describe",
    "error_name",
    "request_name",
    "rpc_context",
]

# Errors after which retrying cannot help and may hurt (the key is dead).
KEY_DEAD = (
    errors.SessionRevokedError,
    errors.AuthKeyDuplicatedError,
    errors.UserDeactivatedError,
    errors.UserDeactivatedBanError,
    errors.SessionExpiredError,
)
TRANSIENT_RPC = (errors.ServerError, errors.RpcCallFailError, errors.TimedOutError)
FLOOD = (errors.FloodWaitError, errors.FloodPremiumWaitError)


def classify(error: BaseException | None) -> StateReason:
    """The StateReason of a failed connect attempt or a lost link."""
    if isinstance(error, LinkAborted):
        reason = error.reason
        return reason if isinstance(reason, StateReason) else StateReason.TRANSPORT_ERROR
    if isinstance(error, ConnectionRefusedError):
        return StateReason.REFUSED
    if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return StateReason.RESET
    if isinstance(error, (asyncio.IncompleteReadError, EOFError)):
        return StateReason.EOF
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return StateReason.CONNECT_TIMEOUT
    if isinstance(error, errors.RPCError):
        return StateReason.SERVER_ERROR
    return StateReason.TRANSPORT_ERROR


def describe(error: BaseException | None) -> str:
    """One line naming the error and what it says (for logs, details and last_error)."""
    if error is None:
        return "unknown error"
    if isinstance(error, (LinkAborted, PeerProtocolError)):
        return str(error)  # our own wording, complete; the class name adds nothing
    text = str(error)
    name = rpc_name(error)
    if name is not None and name not in text:
        return f"{name}: {text}"  # Telethon's text does not name the server's error
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def request_name(request: Any) -> str:
    """The request's TL name (or how many, for a batch)."""
    if isinstance(request, (list, tuple)):
        return f"{len(request)} requests"
    return type(request).__name__


def rpc_context(error: BaseException) -> BaseException | None:
    """The RPC error a cancellation interrupted the handling of: Telethon pauses 2 s after
    a 500 inside its own call, and our timeout may land in that pause."""
    context = error.__context__
    return context if isinstance(context, errors.RPCError) else None


def error_name(error: BaseException) -> str:
    """The error's message (Telethon's RPC errors carry the server's name there)."""
    message = getattr(error, "message", None)
    return str(message) if message else type(error).__name__


def address(conn: Any) -> str:
    """``ip:port`` of a Telethon connection."""
    ip = getattr(conn, "_ip", "?")
    port = getattr(conn, "_port", "?")
    return f"{ip}:{port}"


def dc_of(telegram: Any) -> Any:
    """The DC id of a TelegramClient's session ("?" when unknown)."""
    session = getattr(telegram, "session", None)
    return getattr(session, "dc_id", "?")
