"""The Telethon ``connection=`` class through which a ResilientClient owns the link.

Telethon keeps reconnecting on its own (its sender stays "user-connected" and re-sends
its queue); this class decides *when* each attempt happens (the policy delay is
waited inside ``connect``), reports every link up and down with its cause, and can
abort its socket when the keepalive declares the link dead. Telethon's own WARNINGs
about the outages of such a link (its reconnect chatter) are routed to DEBUG by
`install_log_filter`: the client's INFO lines already say what happened.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any, Protocol

from telethon.network import ConnectionTcpFull
from telethon.network.connection.connection import Connection

__all__ = ["LinkAborted", "LinkObserver", "current_observer", "make_connection_class"]


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

    async def before_attempt(self, conn: Any) -> None: ...

    def attempt_failed(self, conn: Any, error: BaseException) -> None: ...

    def transport_up(self, conn: Any) -> None: ...

    def transport_down(self, conn: Any, error: BaseException | None) -> None: ...

    def packet_received(self, conn: Any) -> None: ...


# The client whose supervisor is creating a connection right now. Telethon builds the
# connection object inside TelegramClient.connect(), which only the supervisor task
# calls; connections Telethon makes elsewhere (exported senders for other DCs, file
# transfers) are created without one and behave like plain Telethon connections.
current_observer: contextvars.ContextVar[LinkObserver | None] = contextvars.ContextVar(
    "resilient_tg_link_observer", default=None
)


class _ObservedConnection:
    """Mixin over a Telethon Connection class, reporting to the observer it was built for."""

    _rtg_observer: LinkObserver | None = None
    _rtg_error: BaseException | None = None
    _rtg_up: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rtg_observer = current_observer.get()

    async def connect(self, timeout: float | None = None, ssl: Any = None) -> None:
        observer = self._rtg_observer
        if observer is None:
            await super().connect(timeout=timeout, ssl=ssl)  # type: ignore[misc]
            return
        await observer.before_attempt(self)
        self._rtg_error = None
        try:
            await super().connect(timeout=timeout, ssl=ssl)  # type: ignore[misc]
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                observer.attempt_failed(self, exc)
            raise
        self._rtg_up = True
        observer.transport_up(self)

    async def disconnect(self) -> None:
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
            if self._rtg_error is None:
                self._rtg_error = exc
            raise
        if self._rtg_observer is not None:
            self._rtg_observer.packet_received(self)
        return data

    def abort(self, error: LinkAborted) -> None:
        """Kill the socket now: pending reads fail with ``error`` (an OSError), so
        Telethon treats it as a lost link and reconnects."""
        if self._rtg_error is None:
            self._rtg_error = error
        reader = getattr(self, "_reader", None)
        writer = getattr(self, "_writer", None)
        if reader is not None:
            reader.set_exception(error)
        if writer is not None:
            transport = writer.transport
            if transport is not None and not transport.is_closing():
                transport.abort()


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
