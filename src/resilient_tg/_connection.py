"""The Telethon ``connection=`` class through which a ResilientClient owns the link.

Telethon keeps reconnecting on its own (its sender stays "user-connected" and re-sends
its queue); this class decides *when* each attempt happens (the policy delay is
waited inside ``connect``), reports every link up and down with its cause, and can
abort its socket when the keepalive declares the link dead. Telethon's own WARNINGs
about the outages of such a link (its reconnect chatter) are routed to DEBUG by
`install_log_filter`: the client's INFO lines already say what happened. It also keeps the first
bytes the peer sent, so that a peer that does not speak MTProto (an HTTP or TLS
server, garbage) is reported as such, with what it answered, and fails the attempt at
once instead of leaving Telethon waiting for a packet that never completes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from telethon import errors
from telethon.network import ConnectionTcpFull
from telethon.network.connection.connection import Connection

from . import _compat

__all__ = [
    "CONNECT_FAILURES",
    "LinkAborted",
    "LinkObserver",
    "PeerProtocolError",
    "current_observer",
    "explain_failure",
    "make_connection_class",
    "not_mtproto_so_far",
]

# No MTProto packet comes near this size (a file part is at most 1 MiB): a peer that
# announces more is not speaking MTProto ("HTTP" read as a length is 1.3 GB).
MAX_PACKET = 1 << 25
# How much of the peer's first answer is kept, and shown in errors.
_KEEP = 64
_SHOW = 40
# Transport error codes an MTProto server sends as a 4-byte packet (-404, -429, -444).
_TRANSPORT_CODES = frozenset({404, 429, 444})
# What Telethon raises when a peer's bytes are not MTProto (framing or parsing).
_PROTOCOL_ERRORS: tuple[type[BaseException], ...] = (
    errors.InvalidChecksumError,
    errors.TypeNotFoundError,
    errors.SecurityError,
    BufferError,  # InvalidBufferError, and BinaryReader reading past the end
    AssertionError,  # the plain sender's checks ("Bad auth_key_id")
    struct.error,
    ValueError,
    IndexError,
    OverflowError,
)

# What Telethon's connect() raises, besides network and RPC errors, when the peer is not
# an MTProto server (its parse errors, and a link closed in the middle of a packet).
CONNECT_FAILURES: tuple[type[BaseException], ...] = (*_PROTOCOL_ERRORS, EOFError)


class PeerProtocolError(ConnectionError):
    """The peer answered something that is not MTProto (an HTTP or TLS server, garbage).

    A ConnectionError, so that Telethon treats it as a lost link and reconnects; the
    attempts are paced by the ReconnectPolicy like any transport error."""


class LinkAborted(ConnectionResetError):
    """We closed the socket ourselves (keepalive timeout, connect timeout, lease loss).

    ``quiet`` ones (a clean shutdown) are kept out of Telethon's WARNING log: nothing
    went wrong, and our own INFO line already says what happened.
    """

    def __init__(self, reason: Any, detail: str, *, quiet: bool = False) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.quiet = quiet


# Telethon's reconnect chatter: WARNINGs it logs on every outage and shutdown of a link
# it reconnects itself. Where a ResilientClient owns the link, our own INFO lines say
# what happened, so these go to DEBUG; Telethon's other warnings keep their level.
_CHATTER = (
    "Attempt %d at connecting failed",  # network.mtprotosender
    "Connection error %d during auth_key gen",  # network.mtprotosender
    "Server closed the connection",  # network.connection.connection
    "Error executing high-level request after reconnect",  # client.updates
)
# "Security error while unpacking a received message": only this cause is chatter (the
# old session's late answers after a reconnect); any other security error stays loud.
_STALE_SESSION = "wrong session ID"
_TELETHON_LOGGERS = (
    "network.mtprotosender",
    "network.connection.connection",
    "client.updates",
)


class _TelethonChatter(logging.Filter):
    """On Telethon's loggers: drops the record of a quiet LinkAborted (a clean shutdown),
    and routes reconnect chatter to DEBUG while it comes from a link our client owns."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(a, LinkAborted) and a.quiet for a in args):
            return False
        if record.levelno != logging.WARNING or current_observer.get() is None:
            return True  # not chatter, or a plain Telethon client's link: untouched
        template = str(record.msg)
        if not (
            template.startswith(_CHATTER)
            or (template.startswith("Security error") and _STALE_SESSION in record.getMessage())
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        # As if Telethon had logged it at DEBUG: shown only where DEBUG is enabled.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = _TelethonChatter()


def install_log_filter(base_logger: str | logging.Logger | None = None) -> None:
    """Idempotent: attach the filter to Telethon's loggers under ``base_logger`` (the
    TelegramClient argument of that name; default ``"telethon"``)."""
    if isinstance(base_logger, logging.Logger):
        base = base_logger
    else:
        base = logging.getLogger(base_logger or "telethon")
    for name in _TELETHON_LOGGERS:
        logger = base.getChild(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class LinkObserver(Protocol):
    """What the connection reports to (the client's supervisor)."""

    def owns(self, conn: Any) -> bool: ...

    async def before_attempt(self, conn: Any) -> None: ...

    def attempt_failed(self, conn: Any, error: BaseException) -> None: ...

    # May raise (the session lease was lost meanwhile): the link is closed, the connect fails.
    def transport_up(self, conn: Any) -> None: ...

    def transport_down(self, conn: Any, error: BaseException | None) -> None: ...


# The client whose supervisor is creating a connection right now. Telethon builds the
# connection object inside TelegramClient.connect(), which only the supervisor task
# calls. Tasks started from there (Telethon's update loop, the event handlers it runs)
# inherit the variable, so connections built in them (exported senders for downloads
# from other DCs, CDN clients) would carry it too: on its first connect a connection asks
# the observer whether it is the main sender's link (`LinkObserver.owns`), and one that
# is not detaches and behaves like a plain Telethon connection, its trouble never
# reaching the main link's state.
current_observer: contextvars.ContextVar[LinkObserver | None] = contextvars.ContextVar(
    "resilient_tg_link_observer", default=None
)


class _ObservedConnection:
    """Mixin over a Telethon Connection class, reporting to the observer it was built for."""

    _rtg_observer: LinkObserver | None = None
    _rtg_error: BaseException | None = None
    _rtg_up: bool = False
    # The first bytes the peer sent on this link, and whether a whole packet was read.
    _rtg_head: bytes = b""
    _rtg_packets: int = 0
    # When the peer last sent a whole packet (monotonic; 0: never on this link).
    _rtg_heard_at: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rtg_observer = current_observer.get()

    async def connect(self, timeout: float | None = None, ssl: Any = None) -> None:
        observer = self._rtg_observer
        if observer is not None and not observer.owns(self):
            self._rtg_observer = observer = None  # another sender's link (another DC)
        if observer is None:
            await super().connect(timeout=timeout, ssl=ssl)  # type: ignore[misc]
            return
        await observer.before_attempt(self)
        self._rtg_error = None
        self._rtg_head = b""
        self._rtg_packets = 0
        self._rtg_heard_at = 0.0
        self._rtg_drop_stale()
        try:
            await super().connect(timeout=timeout, ssl=ssl)  # type: ignore[misc]
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                observer.attempt_failed(self, exc)
            raise
        self._rtg_tap()
        self._rtg_up = True
        observer.transport_up(self)

    async def disconnect(self) -> None:
        if self._rtg_error is None:
            # Telethon may drop the link on the bytes it read before our read loop sees the
            # close: say what the peer answered rather than "closed by the server".
            garbage = not_mtproto_so_far(self, "then the link was dropped")
            if garbage is not None:
                self._rtg_error = PeerProtocolError(garbage)
        try:
            await super().disconnect()  # type: ignore[misc]
        finally:
            if self._rtg_up and self._rtg_observer is not None:
                self._rtg_up = False
                self._rtg_observer.transport_down(self, self._rtg_error)

    async def _recv(self) -> bytes:
        try:
            data: bytes = await super()._recv()  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            error = explain_failure(self, exc)
            if self._rtg_error is None:
                self._rtg_error = error
            if error is not exc:
                # An OSError for Telethon: a lost link, reconnected (and paced) as such.
                raise error from exc
            raise
        if len(data) >= 8:
            self._rtg_packets += 1
            self._rtg_heard_at = time.monotonic()
        return data

    def _rtg_drop_stale(self) -> None:
        """A new link starts on this (reused) object: what the previous link's read loop
        queued and nobody took (its error, a packet) must not be read as the new link's."""
        _compat.drop_stale_packets(self)

    def note_failure(self, error: BaseException) -> None:
        """Record why this link failed (when it was not seen here), for transport_down."""
        if self._rtg_error is None:
            self._rtg_error = error

    def peer(self) -> str:
        return f"{getattr(self, '_ip', '?')}:{getattr(self, '_port', '?')}"

    def peer_answer(self) -> str | None:
        """What the peer sent before any whole packet, shown short and printable; None
        once a packet of MTProto size was read (or if it sent nothing)."""
        if self._rtg_packets or not self._rtg_head:
            return None
        return show_bytes(self._rtg_head)

    def _rtg_tap(self) -> None:
        """Keep the first bytes the peer sends, and refuse a packet length no MTProto
        peer announces: the codec would wait for it until the attempt times out."""
        reader, _writer = _compat.link_streams(self)
        if reader is None or not hasattr(reader, "feed_data"):
            return
        feed = reader.feed_data
        readexactly = reader.readexactly

        def feed_data(data: bytes) -> None:
            self._rtg_head += bytes(data[: _KEEP - len(self._rtg_head)])
            if len(self._rtg_head) >= _KEEP:
                # Enough kept: later bytes take the reader's own method (no call per chunk).
                reader.__dict__.pop("feed_data", None)
            feed(data)

        def checked_readexactly(n: int) -> Awaitable[bytes]:
            # A plain function handing back the reader's coroutine: no extra coroutine per
            # read on a path every packet takes (allocations show in the tail latency).
            if n > MAX_PACKET:
                raise PeerProtocolError(_not_mtproto(self, f"read as a {n}-byte packet"))
            result: Awaitable[bytes] = readexactly(n)
            return result

        reader.feed_data = feed_data
        reader.readexactly = checked_readexactly

    def abort(self, error: LinkAborted) -> None:
        """Kill the socket now: pending reads fail with ``error`` (an OSError), so
        Telethon treats it as a lost link and reconnects."""
        if self._rtg_error is None:
            self._rtg_error = error
        reader, writer = _compat.link_streams(self)
        if reader is not None:
            reader.set_exception(error)
        if writer is not None:
            transport = writer.transport
            if transport is not None and not transport.is_closing():
                transport.abort()


def show_bytes(data: bytes) -> str:
    """The first bytes, printable (escapes for the rest) and short, quoted."""
    text = repr(bytes(data[:_SHOW]))[1:]  # drop the b of b'...'
    if len(data) > _SHOW:
        text = text[:-1] + "..." + text[-1]
    return text


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _kind(head: bytes) -> str:
    if head.startswith((b"HTTP/", b"<", b"GET ", b"POST ")):
        return "; an HTTP server?"
    if len(head) >= 2 and head[0] in (0x15, 0x16) and head[1] == 0x03:
        return "; a TLS server?"
    if head.startswith(b"SSH-"):
        return "; an SSH server?"
    return ""


def _not_mtproto(conn: Any, what: str = "") -> str:
    head: bytes = getattr(conn, "_rtg_head", b"")
    where = conn.peer() if hasattr(conn, "peer") else "?"
    parts = [f"it answered {show_bytes(head)}"] if head else []
    if what:
        parts.append(what)
    text = ", ".join(parts) or "its answer did not parse"
    return f"the peer at {where} does not speak MTProto ({text}{_kind(head)})"


def not_mtproto_so_far(conn: Any, what: str) -> str | None:
    """Why the link is not MTProto if the peer sent bytes that never made a packet (an
    attempt that timed out that way met another kind of server), else None."""
    if getattr(conn, "_rtg_head", b"") and not getattr(conn, "_rtg_packets", 0):
        return _not_mtproto(conn, what)
    return None


def explain_failure(conn: Any, error: BaseException) -> BaseException:
    """``error``, or a PeerProtocolError saying what the peer answered when ``error``
    shows that the peer does not speak MTProto (garbage, an HTTP or TLS server, a
    truncated packet before any whole one). Network faults are returned unchanged."""
    if isinstance(error, (LinkAborted, PeerProtocolError, asyncio.CancelledError)):
        return error
    if getattr(error, "code", None) in _TRANSPORT_CODES and isinstance(error, BufferError):
        return error  # an MTProto transport error (-404, -429, -444): the caller knows them
    if isinstance(error, asyncio.IncompleteReadError):
        garbage = not_mtproto_so_far(conn, "then closed the link")
        return PeerProtocolError(garbage) if garbage is not None else error
    if isinstance(error, _PROTOCOL_ERRORS):
        return PeerProtocolError(_not_mtproto(conn, f"which Telethon rejects: {_short(error)}"))
    return error


_CLASSES: dict[type, type] = {}


def make_connection_class(base: type | None = None) -> type:
    """The observed subclass of ``base`` (default ConnectionTcpFull), one per base class:
    a class per client would cost memory in every client of a fleet."""
    base = base or ConnectionTcpFull
    if not (isinstance(base, type) and issubclass(base, Connection)):
        raise TypeError(f"connection must be a Telethon Connection class, got {base!r}")
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(f"Resilient{base.__name__}", (_ObservedConnection, base), {})
    return cls
