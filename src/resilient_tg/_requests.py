"""The request gate: every request through ``client.telegram`` passes `call`.

It waits for the link within request_timeout, retries what is transient, maps what the
caller must not see, and ends each request exactly once (DESIGN, "Requests"). It is on
every request's path, so it stays lean: `GatedTelegram.__call__` hands back `call`'s
coroutine itself, and on Python 3.11+ a try allocates no helper coroutine or task.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio
from telethon import TelegramClient, errors, events
from telethon.tl import functions
from telethon.tl.types import auth as auth_types
from telethon.tl.types.updates import ChannelDifferenceTooLong, DifferenceTooLong

from . import _compat, _exported
from ._connection import install_log_filter, make_connection_class
from ._errors import NotConnectedError, ResultLostError, ResultUnknownError
from ._final import raise_if_final
from ._gaps import recover_account_gap, recover_channel_gap
from ._kinds import FLOOD, KEY_DEAD, TRANSIENT_RPC, describe, error_name, request_name, rpc_context
from ._postconnect import NOT_LOGGED_IN

if TYPE_CHECKING:
    from ._core import ClientCore
    from .stores import StoreSession

__all__ = ["GatedTelegram", "build_telegram", "call"]

log = logging.getLogger("resilient_tg.client")

# Task.cancelling()/uncancel() (3.11+) tell our own timeout from a caller's cancellation.
_CAN_TELL_CANCELLATIONS = sys.version_info >= (3, 11)
_TRANSIENT_PAUSE = 1.0  # seconds between tries after a transient server error
# Telethon's own requests through __call__ (its update loop): exempt from the queue bound.
_INTERNAL_REQUESTS = (
    functions.updates.GetDifferenceRequest,
    functions.updates.GetChannelDifferenceRequest,
)
_CHANNEL_DIFFERENCE = functions.updates.GetChannelDifferenceRequest
_DIFFERENCE = functions.updates.GetDifferenceRequest
# The server moved the session to another DC; Telethon switches for a session that is not
# logged in (see LinkSupervisor.switch_dc) and the request is then resent there.
_MIGRATE = (errors.PhoneMigrateError, errors.UserMigrateError, errors.NetworkMigrateError)
_LOGIN_REQUESTS = (
    functions.auth.SignInRequest,
    functions.auth.SignUpRequest,
    functions.auth.ImportBotAuthorizationRequest,
    functions.auth.CheckPasswordRequest,
    functions.auth.ImportAuthorizationRequest,
    functions.auth.ExportLoginTokenRequest,  # QR login: answers LoginTokenSuccess once accepted
    functions.auth.ImportLoginTokenRequest,
)


class GatedTelegram(_compat.TelethonHooks, TelegramClient):  # type: ignore[misc]  # untyped
    """TelegramClient whose calls wait for the link and map errors (see `call`), and whose
    DC switch is the supervisor's (see `LinkSupervisor.switch_dc`)."""

    _rtg_owner: ClientCore

    # Telethon's DC work, handed to the owner (see _compat.TelethonHooks); an instance
    # without one (Telethon's CDN client, built from this class) keeps Telethon's.

    async def _rtg_switch_dc(self, new_dc: int) -> None:
        owner = self.__dict__.get("_rtg_owner")
        if owner is None:
            await super()._rtg_switch_dc(new_dc)
        else:
            await owner._link.switch_dc(new_dc)

    async def _rtg_borrow(self, dc_id: int, borrow: Any) -> Any:
        owner = self.__dict__.get("_rtg_owner")
        if owner is None:
            return await borrow(dc_id)
        return await _exported.borrow(owner, dc_id, borrow)

    async def _rtg_exported_call(self, sender: Any, request: Any, ordered: bool) -> Any:
        owner = self.__dict__.get("_rtg_owner")
        if owner is None:
            return await _compat.exported_call(self, sender, request, ordered)
        return await _exported.call(owner, sender, request, ordered)

    def _rtg_main_call(self, request: Any, ordered: bool) -> Awaitable[Any]:
        # A download from the home DC sends on the main sender directly: gate it too.
        owner = self.__dict__.get("_rtg_owner")
        if owner is None:
            return _compat.main_call(self, request, ordered)  # type: ignore[no-any-return]
        return call(owner, request, ordered)

    def __call__(
        self, request: Any, ordered: bool = False, flood_sleep_threshold: int | None = None
    ) -> Awaitable[Any]:
        if request.__class__ is _CHANNEL_DIFFERENCE or request.__class__ is _DIFFERENCE:
            return _difference(self._rtg_owner, request, ordered)
        # Hands back call()'s coroutine: one coroutine less per request.
        return call(self._rtg_owner, request, ordered)

    async def _rtg_raw_call(
        self, request: Any, ordered: bool = False, answers: list[BaseException] | None = None
    ) -> Any:
        try:
            return await _compat.main_call(self, request, ordered)
        except asyncio.CancelledError as cancelled:
            answer = rpc_context(cancelled)  # cancelled in Telethon's pause after a 500
            if answer is not None and answers is not None:
                answers.append(answer)
            raise


def build_telegram(client: ClientCore, session: StoreSession) -> GatedTelegram:
    """The client's TelegramClient: Telethon's own retries off (the policy and the gate
    own them), the observed connection class, and the handlers registered early."""
    connection = make_connection_class(client._connection_base)
    install_log_filter(client._telethon_kwargs.get("base_logger"))
    telegram = GatedTelegram(
        session,
        client._api_id,
        client._api_hash,
        connection=connection,
        connection_retries=-1,  # forever; the policy paces and ends attempts
        retry_delay=0,
        auto_reconnect=True,
        catch_up=True,
        timeout=client.reconnect_policy.connect_timeout,
        request_retries=0,
        raise_last_call_error=True,
        flood_sleep_threshold=0,
        **client._telethon_kwargs,
    )
    telegram._rtg_owner = client
    _compat.check(telegram)
    _compat.install_gap_box(telegram)
    telegram.add_event_handler(client._on_raw_update, events.Raw)
    for callback, event in client._early_handlers:
        telegram.add_event_handler(callback, event)
    client._early_handlers.clear()
    return telegram


async def call(client: ClientCore, request: Any, ordered: bool) -> Any:
    """Every request through ``client.telegram``: wait for the link within
    request_timeout, retry what is transient, map what the caller must not see.

    It ends once: its answer or RPC error (after transient errors, the last one);
    NotConnectedError (never sent, withdrawn); ResultUnknownError (sent, unanswered,
    withdrawn); ResultLostError; AuthLostError; or the caller's own cancellation
    (withdrawn too). A request nobody waits for is never sent or resent."""
    telegram = client._telegram
    assert telegram is not None
    if not client._carrying.is_set() and not isinstance(request, _INTERNAL_REQUESTS):
        waiting = _compat.queued_requests(telegram) + client._waiting_for_sender
        if waiting >= client.max_queued_requests:
            raise_if_final(client, request)
            raise NotConnectedError(
                f"{request_name(request)} was not sent: the queue is full ({waiting} "
                f"requests wait for the link, max_queued_requests={client.max_queued_requests};"
                f" link {client._state.value})"
            )
    deadline = time.monotonic() + client.request_timeout
    generation = client._generation
    # A try Telethon dropped after giving it a msg_id (a full disconnect): it may
    # have taken effect, so a timeout is then ResultUnknownError.
    sent_before = False
    server_error: BaseException | None = None  # the last transient RPC error
    while True:
        raise_if_final(client, request, sent_before)
        # Nothing is handed to Telethon once the lease is past its time (a pause may have
        # outlasted it, its timer not run yet): it waits for the link after the recovery.
        if not (
            client._leases.check() and _compat.sender_user_connected(telegram)
        ) and not await _wait_user_connected(client, deadline):
            raise _ending(client, telegram, request, sent_before, server_error)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _ending(client, telegram, request, sent_before, server_error)
        switches = client._link.switches
        # The try itself is inline (no helper coroutine or task) on Python 3.11+: every
        # object allocated per request adds to garbage-collection pauses, which show
        # in the tail latency (benchmarks/overhead.py).
        if _CAN_TELL_CANCELLATIONS:
            task: Any = asyncio.current_task()  # cancelling()/uncancel(): 3.11+
            watch = client._deadlines.add(task, remaining)
            exc: BaseException | None = None
            try:
                value = await _compat.main_call(telegram, request, ordered)
            except asyncio.CancelledError as cancelled:
                if watch.fired:
                    task.uncancel()
                    ending = _ending(
                        client,
                        telegram,
                        request,
                        sent_before,
                        rpc_context(cancelled) or server_error,
                    )
                    if task.cancelling() == 0:
                        raise ending from None
                    raise
                if task.cancelling():
                    _compat.withdraw(telegram, request)  # the caller gave up on it
                    raise
                outcome = "cancelled"
            except Exception as error:  # noqa: BLE001 - classified below
                outcome, exc = "error", error
            else:
                outcome = "ok"
            finally:
                client._deadlines.finish(watch)
        else:
            outcome, value = await _try_once_in_task(
                client, telegram, request, ordered, remaining, sent_before, server_error
            )
            exc = value if outcome == "error" else None
        if outcome == "cancelled":
            # Telethon cancelled it (a full disconnect: lease loss, shutdown) after
            # giving it a msg_id: never a CancelledError for the caller.
            sent_before = True
            raise_if_final(client, request, sent_before)
            continue
        if exc is None:
            result = value
            client._health.last_request_ok_at = time.time()
            if isinstance(request, _LOGIN_REQUESTS) and _is_authorization(result):
                _on_login(client)
            elif isinstance(request, functions.auth.LogOutRequest):
                client._health.authorized = False
            return result
        if isinstance(exc, FLOOD):
            seconds = max(1, int(exc.seconds))
            if seconds <= client.flood_sleep_threshold and seconds < deadline - time.monotonic():
                log.info("flood wait of %ds on %s; sleeping", seconds, type(request).__name__)
                await asyncio.sleep(seconds)
                continue
            raise exc
        if isinstance(exc, errors.RandomIdDuplicateError):
            if client._generation != generation:
                raise ResultLostError(
                    f"{type(request).__name__} took effect on the server, but its answer was "
                    "lost with the link (the resend was refused as RANDOM_ID_DUPLICATE)"
                ) from exc
            raise exc
        if isinstance(exc, TRANSIENT_RPC):
            # The server answered: a later timeout reports this, not silence.
            server_error = exc
            client._health.last_error = describe(exc)
            if deadline - time.monotonic() > _TRANSIENT_PAUSE:
                await asyncio.sleep(_TRANSIENT_PAUSE)
                continue
            raise exc
        if isinstance(exc, _compat.Withdrawn):  # the client stopped: see end_queued
            sent_before = sent_before or exc.sent
            raise_if_final(client, request, sent_before)
            raise _ending(client, telegram, request, sent_before, server_error) from exc
        if isinstance(exc, errors.AuthKeyNotFound):
            sent_before = True  # set on the pending requests of a dropped link
            continue
        if isinstance(exc, _MIGRATE) and client._link.switches != switches:
            continue  # the session moved to the DC the server named: ask there
        if isinstance(exc, ConnectionError) and not isinstance(exc, NotConnectedError):
            # Telethon's own "disconnected" errors: wait for the link instead.
            continue
        if isinstance(exc, KEY_DEAD):
            client._link.auth_lost(error_name(exc), exc)
        elif isinstance(exc, errors.AuthKeyUnregisteredError) and client._health.authorized:
            client._link.auth_lost("AUTH_KEY_UNREGISTERED", exc)
        raise exc


async def _difference(client: ClientCore, request: Any, ordered: bool) -> Any:
    """get(Channel)Difference; when Telethon's update loop made it and the answer is "too
    long", the gap's messages are fetched and handed back as a difference (see _gaps)."""
    result = await call(client, request, ordered)
    telegram = client._telegram
    if isinstance(result, ChannelDifferenceTooLong) and _compat.is_box_channel_request(
        telegram, request
    ):
        return await recover_channel_gap(client, request, result, call)
    if isinstance(result, DifferenceTooLong) and _compat.is_box_account_request(telegram, request):
        return await recover_account_gap(client, request, result, call)
    return result


async def _try_once_in_task(
    client: ClientCore,
    telegram: GatedTelegram,
    request: Any,
    ordered: bool,
    remaining: float,
    sent_before: bool,
    server_error: BaseException | None,
) -> tuple[str, Any]:
    """One try within ``remaining`` seconds on Python 3.10, which has no
    Task.cancelling(): in a helper task. ("ok", result), ("error", exception), or
    ("cancelled", None) when Telethon itself cancelled the request; raises how the
    request ends (see `_ending`) on timeout."""
    answers: list[BaseException] = []
    task = asyncio.ensure_future(telegram._rtg_raw_call(request, ordered, answers))
    try:
        done, _ = await asyncio.wait({task}, timeout=remaining)
    except asyncio.CancelledError:
        task.cancel()
        _compat.withdraw(telegram, request)  # the caller gave up on it
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)  # it ends at its next step
        answer = answers[-1] if answers else server_error
        raise _ending(client, telegram, request, sent_before, answer)
    if task.cancelled():
        return "cancelled", None
    exc = task.exception()
    return ("error", exc) if exc is not None else ("ok", task.result())


def _ending(
    client: ClientCore,
    telegram: GatedTelegram,
    request: Any,
    sent_before: bool,
    server_error: BaseException | None,
) -> BaseException:
    """How a request without an answer within request_timeout ends. Withdraws it from
    Telethon first, so that it is never sent (or resent) after this."""
    where = _compat.withdraw(telegram, request)
    link = f"link {client._state.value}{': ' + client._detail if client._detail else ''}"
    limit = f"request_timeout={client.request_timeout:.1f}s"
    if where == _compat.SENT or sent_before:
        return ResultUnknownError(
            f"{request_name(request)} was sent but not answered within {limit} ({link}); "
            "it was withdrawn and will not be resent, and may or may not have taken effect",
            request=request,
        )
    if server_error is not None:
        return server_error  # every try was answered, with this error last
    return NotConnectedError(
        f"{request_name(request)} was not sent: no link carried it within {limit} "
        f"({link}); it was withdrawn and will never be sent"
    )


async def _wait_user_connected(client: ClientCore, deadline: float) -> bool:
    """Wait until Telethon's sender is user-connected under a held lease; False if
    ``deadline`` passes."""
    telegram = client._telegram
    assert telegram is not None
    client._waiting_for_sender += 1
    try:
        while not (client._leases.check() and _compat.sender_user_connected(telegram)):
            raise_if_final(client)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with anyio.move_on_after(min(remaining, 0.05)):
                await client._state_changed.wait()
        return True
    finally:
        client._waiting_for_sender -= 1


def _on_login(client: ClientCore) -> None:
    client._health.authorized = True
    client._health.was_authorized = True
    # Health follows a login made through client.telegram (it was "not logged in").
    client._detail = client._detail.removesuffix(NOT_LOGGED_IN)
    if client._session is not None:
        client._session.mark_authorized()
        # Telethon fetches the new account's update state right after the login.
        client._session.release_update_state()
        client._session.save()


def _is_authorization(result: Any) -> bool:
    """A login's answer: auth.authorization, directly or inside a QR login's success."""
    if isinstance(result, auth_types.LoginTokenSuccess):
        result = result.authorization
    return isinstance(result, auth_types.Authorization)
