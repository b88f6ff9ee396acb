"""Exported senders: Telethon's links to other DCs, kept apart from the main link and bounded.

Telethon downloads a file stored on another DC (and asks some statistics) through an
"exported sender": a second MTProtoSender, borrowed with ``_borrow_exported_sender``
(connect, then export the login from the home DC and import it there). Its connection
is built from our connection class but detaches from the supervisor on its first
connect (`LinkObserver.owns`), so its trouble never moves the client's state, which
is about the home DC only. What this module adds (through `_compat.TelethonHooks`):

- borrowing one (its link, its handshake, the authorization import) ends within
  ``request_timeout``, else `NotConnectedError`: nothing was sent to that DC;
- a request on one is watched like the main link (a ping after the keepalive's
  ``interval``, no pong within its ``timeout`` closes the link; Telethon's sender then
  reconnects and resends the request), and ends within ``request_timeout``, else
  `ResultUnknownError`: it was withdrawn and the link closed (the next borrow dials
  again). A download started before a fault thus completes after the recovery, or
  fails with our error; it never hangs and never sees Telethon's ConnectionError;
- leaving the client closes every exported sender, including one a borrow was still
  opening (`stop`, `close`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from telethon.tl import functions

from . import _compat
from ._connection import LinkAborted
from ._errors import NotConnectedError, ResultUnknownError
from ._final import raise_if_final
from ._kinds import describe, request_name
from ._state import StateReason

if TYPE_CHECKING:
    from ._core import ClientCore

__all__ = ["borrow", "call", "close", "stop"]


async def borrow(
    client: ClientCore, dc_id: int, borrow_sender: Callable[[int], Awaitable[Any]]
) -> Any:
    """Telethon's ``_borrow_exported_sender(dc_id)``, ended within request_timeout (or
    when the client stops)."""
    raise_if_final(client)
    limit = client.request_timeout
    scope = anyio.CancelScope(deadline=anyio.current_time() + limit)
    borrows = client._exported_borrows
    if borrows is None:
        borrows = client._exported_borrows = set()  # made on first use: most never borrow
    borrows.add(scope)
    problem: BaseException | None = None
    try:
        with scope:
            return await borrow_sender(dc_id)
    except (ConnectionError, OSError) as exc:  # Telethon's sender gave its connect up
        problem = exc
    finally:
        borrows.discard(scope)
    telegram = client._telegram
    if telegram is not None:
        await _compat.close_unconnected_exported(telegram)
    raise_if_final(client)
    why = (
        f"connecting failed ({describe(problem)})"
        if problem is not None
        else f"no link within request_timeout={limit:.1f}s"
    )
    raise NotConnectedError(
        f"no link to DC {dc_id} (for a download from there): {why}; nothing was sent there"
    ) from problem


async def call(client: ClientCore, sender: Any, request: Any, ordered: bool) -> Any:
    """A request on an exported sender: watched, and ended within request_timeout."""
    raise_if_final(client)
    telegram = client._telegram
    assert telegram is not None
    limit = client.request_timeout
    dc_id = getattr(sender, "dc_id", "?")
    watch = _LinkWatch(client, sender, dc_id)
    problem: BaseException | None = None
    where: str | None = None
    try:
        with anyio.move_on_after(limit):
            try:
                return await _compat.exported_call(telegram, sender, request, ordered)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and getattr(task, "cancelling", lambda: 1)():
                    where = _compat.withdraw(telegram, request, sender)
                    raise  # the caller's own cancellation (or our deadline)
                problem = ConnectionError("the link was closed")  # Telethon cancelled it
            except ConnectionError as exc:  # Telethon's sender gave up (or is closed)
                problem = exc
    finally:
        watch.stop()
    if where is None:
        where = _compat.withdraw(telegram, request, sender)
    sent = where == _compat.SENT or problem is not None
    await _compat.forget_exported(telegram, sender)  # the next borrow dials again
    raise_if_final(client, request, sent)
    link = f"its link to DC {dc_id}"
    if problem is not None:
        why = f"{link} failed ({describe(problem)})"
    else:
        why = f"no answer came on {link} within request_timeout={limit:.1f}s"
    raise ResultUnknownError(
        f"{request_name(request)} was sent but {why}; it was withdrawn and the link closed",
        request=request,
    )


def stop(client: ClientCore) -> None:
    """Leaving: end the borrows still opening a link (they close what they opened)."""
    for scope in list(client._exported_borrows or ()):
        scope.cancel()


async def close(client: ClientCore) -> None:
    """Leaving, after Telethon's disconnect(): close every exported sender still open."""
    if client._telegram is not None:
        await _compat.close_exported(client._telegram)


class _LinkWatch:
    """While a request waits on an exported sender: a ping after the keepalive's
    ``interval``; no pong within its ``timeout`` closes the link, which Telethon's sender
    reconnects, resending the request. Timer callbacks only: no task to leak."""

    __slots__ = ("_client", "_dc_id", "_handle", "_ping", "_sender")

    def __init__(self, client: ClientCore, sender: Any, dc_id: Any) -> None:
        self._client = client
        self._sender = sender
        self._dc_id = dc_id
        self._ping: Any = None
        loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = loop.call_later(
            client.keepalive_policy.interval, self._send_ping
        )

    def _send_ping(self) -> None:
        policy = self._client.keepalive_policy
        loop = asyncio.get_running_loop()
        ping = functions.PingRequest(ping_id=int.from_bytes(os.urandom(8), "big", signed=True))
        try:
            future = self._sender.send(ping)
        except ConnectionError:  # reconnecting right now: look again later
            self._handle = loop.call_later(policy.interval, self._send_ping)
            return
        future.add_done_callback(_consume)
        self._ping = ping
        self._handle = loop.call_later(policy.timeout, self._check, future)

    def _check(self, future: asyncio.Future[Any]) -> None:
        policy = self._client.keepalive_policy
        if not future.done():
            self._withdraw_ping()
            _compat.abort_sender_link(
                self._sender,
                LinkAborted(
                    StateReason.KEEPALIVE_TIMEOUT,
                    f"exported link to DC {self._dc_id}: no pong within {policy.timeout:.1f}s",
                    quiet=True,
                ),
            )
        self._ping = None
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(policy.interval, self._send_ping)

    def _withdraw_ping(self) -> None:
        telegram = self._client._telegram
        if self._ping is not None and telegram is not None:
            _compat.withdraw(telegram, self._ping, self._sender)
        self._ping = None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._withdraw_ping()


def _consume(future: asyncio.Future[Any]) -> None:
    """A ping's outcome is read by `_LinkWatch._check`; never logged as unretrieved."""
    if not future.cancelled():
        future.exception()
