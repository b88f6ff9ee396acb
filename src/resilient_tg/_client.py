"""ResilientClient: a Telethon client that never stays down while recovery is possible.

It owns its background tasks (supervisor, keepalive, lease renewal, session flushing,
callback dispatch) through a `TaskSet` and ends them when it is left. Telethon's
sender stays "user-connected" and re-sends its queue on every reconnect; the
``connection=`` class from `._connection` paces each attempt by the ReconnectPolicy
and reports the link going up and down; after every reconnect the client probes
authorization and fetches what it missed (CATCHING_UP) before it reports CONNECTED.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import anyio
from telethon import TelegramClient, errors, events
from telethon.tl import functions
from telethon.tl.types import auth as auth_types

from . import _compat
from ._callbacks import Callback, CallbackRegistry
from ._connection import (
    CONNECT_FAILURES,
    LinkAborted,
    PeerProtocolError,
    current_observer,
    explain_failure,
    install_log_filter,
    make_connection_class,
    not_mtproto_so_far,
)
from ._deadlines import Deadlines
from ._errors import (
    AppRejectedError,
    AuthLostError,
    LeaseLostError,
    NotConnectedError,
    ResultLostError,
    ResultUnknownError,
)
from ._fatal import app_rejected, rpc_name
from ._flag import Flag
from ._keepalive import run_keepalive
from ._lease import LeaseKeeper
from ._policy import KeepalivePolicy, ReconnectPolicy
from ._state import ConnectionState, Health, LeaseInfo, StateChange, StateReason, StoreInfo
from ._status import StatusPublisher
from ._tasks import TaskSet
from .stores import SessionStore, StoreSession, default_holder, open_store
from .stores._base import Lease
from .stores._messages import store_error_text

__all__ = ["ClientListener", "ResilientClient"]

log = logging.getLogger("resilient_tg.client")

C = TypeVar("C", bound=Callback)
H = TypeVar("H", bound=Callable[..., Any])
T = TypeVar("T")

# The reconnect jitter's default source, shared: a Random() per client would cost 2.5 KB
# each, and jitter needs no per-client stream (pass rng= for a seeded one).
_RNG = random.Random()

# Telethon arguments that a policy owns: passing one is a TypeError naming the field.
_OWNED_KWARGS = {
    "connection_retries": "ReconnectPolicy.max_attempts",
    "retry_delay": "ReconnectPolicy.initial_delay / max_delay",
    "auto_reconnect": "ReconnectPolicy (reconnection is always on)",
    "catch_up": "ResilientClient (missed updates are always fetched after a reconnect)",
    "timeout": "ReconnectPolicy.connect_timeout",
    "request_retries": "ResilientClient(request_timeout=...) (transient errors retry within it)",
    "raise_last_call_error": "ResilientClient (the real error is always raised)",
}
# Errors after which retrying cannot help and may hurt (the key is dead).
_KEY_DEAD = (
    errors.SessionRevokedError,
    errors.AuthKeyDuplicatedError,
    errors.UserDeactivatedError,
    errors.UserDeactivatedBanError,
    errors.SessionExpiredError,
)
# Task.cancelling()/uncancel() (3.11+) tell our own timeout from a caller's cancellation.
_CAN_TELL_CANCELLATIONS = sys.version_info >= (3, 11)
_TRANSIENT_RPC = (errors.ServerError, errors.RpcCallFailError, errors.TimedOutError)
_TRANSIENT_PAUSE = 1.0  # seconds between tries after a transient server error
_FLOOD = (errors.FloodWaitError, errors.FloodPremiumWaitError)
_NOT_LOGGED_IN = "; not logged in"  # the CONNECTED detail's suffix until a login
# Telethon's own requests through __call__ (its update loop): exempt from the queue bound.
_INTERNAL_REQUESTS = (
    functions.updates.GetDifferenceRequest,
    functions.updates.GetChannelDifferenceRequest,
)
_LOGIN_REQUESTS = (
    functions.auth.SignInRequest,
    functions.auth.SignUpRequest,
    functions.auth.ImportBotAuthorizationRequest,
    functions.auth.CheckPasswordRequest,
    functions.auth.ImportAuthorizationRequest,
    functions.auth.ExportLoginTokenRequest,  # QR login: answers LoginTokenSuccess once accepted
    functions.auth.ImportLoginTokenRequest,
)


class ClientListener(Protocol):
    """Internal observer (status publisher, metrics): called inline, must be quick and
    must not raise (a failure is logged and ignored)."""

    def on_transition(self, change: StateChange) -> None: ...
    def on_pong(self, rtt: float) -> None: ...
    def on_save(self, duration: float, error: BaseException | None) -> None: ...


class _Telegram(TelegramClient):  # type: ignore[misc]  # Telethon is untyped
    """TelegramClient whose calls wait for the link and map errors (see ResilientClient)."""

    _rtg_owner: ResilientClient

    def __call__(
        self, request: Any, ordered: bool = False, flood_sleep_threshold: int | None = None
    ) -> Awaitable[Any]:
        # Hands back ResilientClient._call's coroutine: one coroutine less per request.
        return self._rtg_owner._call(request, ordered)

    async def _rtg_raw_call(
        self, request: Any, ordered: bool = False, answers: list[BaseException] | None = None
    ) -> Any:
        try:
            return await TelegramClient.__call__(self, request, ordered=ordered)
        except asyncio.CancelledError as cancelled:
            answer = _rpc_context(cancelled)  # cancelled in Telethon's pause after a 500
            if answer is not None and answers is not None:
                answers.append(answer)
            raise


class ResilientClient:
    """Keeps one Telethon session connected, watched and caught up; says what state it is in.

    ``async with ResilientClient(store, api_id, api_hash) as client:`` loads the
    session from ``store`` (a SessionStore or a URL for ``open_store``) and takes its
    lease, then returns while the link comes up in the background: a service can start
    while Telegram is unreachable and say so in its health. ``client.telegram`` is the
    whole Telethon API; ``await client.wait_connected()`` waits for CONNECTED.

    Health publishing, for probes that must not open the session (``resilient-tg
    status``): ``status_file=PATH`` keeps a JSON file current (``Health.to_dict()`` plus
    ``written_at`` and ``pid``; atomic, rewritten on every transition and every second,
    state "closed" after exit); ``status_address="127.0.0.1:8081"`` serves ``GET /health``
    (200 when healthy, else 503) and ``GET /status`` (always 200) with the same JSON
    while the client runs (port 0 picks one; see `status_url`).
    """

    def __init__(
        self,
        store: SessionStore | str,
        api_id: int,
        api_hash: str,
        *,
        reconnect: ReconnectPolicy | None = None,
        keepalive: KeepalivePolicy | None = None,
        request_timeout: float = 60.0,
        shutdown_timeout: float = 10.0,
        max_queued_requests: int = 1000,
        lease_ttl: float = 30.0,
        flush_interval: float = 1.0,
        flood_sleep_threshold: float = 60.0,
        holder: str | None = None,
        rng: random.Random | None = None,
        status_file: str | os.PathLike[str] | None = None,
        status_address: str | None = None,
        **telethon_kwargs: Any,
    ) -> None:
        for name, owner in _OWNED_KWARGS.items():
            if name in telethon_kwargs:
                raise TypeError(f"ResilientClient does not take {name!r}: use {owner} instead")
        for name, value in (
            ("request_timeout", request_timeout),
            ("shutdown_timeout", shutdown_timeout),
            ("lease_ttl", lease_ttl),
            ("flush_interval", flush_interval),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ResilientClient({name}=...) must be > 0, got {value!r}")
        if not isinstance(flood_sleep_threshold, (int, float)) or flood_sleep_threshold < 0:
            raise ValueError(
                "ResilientClient(flood_sleep_threshold=...) must be >= 0, "
                f"got {flood_sleep_threshold!r}"
            )
        if (
            isinstance(max_queued_requests, bool)
            or not isinstance(max_queued_requests, int)
            or max_queued_requests < 1
        ):
            raise ValueError(
                "ResilientClient(max_queued_requests=...) must be an int >= 1, "
                f"got {max_queued_requests!r}"
            )
        if not api_id or not api_hash:
            raise ValueError("ResilientClient needs api_id and api_hash")
        self._listeners: list[ClientListener] = []
        self._status: StatusPublisher | None = None
        if status_file is not None or status_address is not None:
            self._status = StatusPublisher(self, file=status_file, address=status_address)
            self._listeners.append(self._status)
        self._store = open_store(store) if isinstance(store, str) else store
        if not isinstance(self._store, SessionStore):
            raise TypeError(f"store must be a SessionStore or a URL, got {type(store).__name__}")
        self._api_id = int(api_id)
        self._api_hash = api_hash
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self.keepalive_policy = keepalive or KeepalivePolicy()
        self.request_timeout = float(request_timeout)
        self.shutdown_timeout = float(shutdown_timeout)
        self.max_queued_requests = max_queued_requests
        self.lease_ttl = float(lease_ttl)
        self.flush_interval = float(flush_interval)
        self.flood_sleep_threshold = float(flood_sleep_threshold)
        self.holder = holder or default_holder()
        self._rng = rng or _RNG
        self._connection_base = telethon_kwargs.pop("connection", None)
        self._telethon_kwargs = telethon_kwargs
        self._callbacks = CallbackRegistry()
        # Event handlers registered before entering; given to Telethon when it exists.
        self._early_handlers: list[tuple[Callable[..., Any], Any]] = []

        self._state = ConnectionState.IDLE
        self._reason: StateReason | None = None
        self._detail = ""
        self._since = time.time()
        self._state_changed = Flag()
        self._telegram: _Telegram | None = None
        self._session: StoreSession | None = None
        self._tasks = TaskSet()
        self._deadlines = Deadlines()
        self._waiting_for_sender = 0  # requests in _wait_user_connected (queue bound)
        self._closing = False
        self._entered = False

        # Link bookkeeping (see the LinkObserver methods below).
        self._conn: Any = None
        self._transport_up = False
        self._generation = 0
        self._attempt = 0
        self._attempt_started: float | None = None
        self._next_attempt_at: float | None = None
        self._outage_started: float | None = None
        self._connected_since: float | None = None
        self._first_attempt = True
        # Set when telegram.connect() has returned in this connect cycle.
        self._sender_ready = Flag()
        # Set while the current link has answered our probe.
        self._established = Flag()
        # Set while the current link carries requests (the keepalive pings then).
        self._carrying = Flag()
        self._post_connect: asyncio.Task[None] | None = None
        self._gave_up = False

        # Health.
        self._authorized: bool | None = None
        self._was_authorized = False
        self._last_pong_at: float | None = None
        self._last_update_at: float | None = None
        self._last_request_ok_at: float | None = None
        self._rtt: float | None = None
        self._reconnects_total = 0
        self._last_error: str | None = None
        self._rejected_reason = ""

        # Lease (see _lease.py; read through the properties below).
        self._leases = LeaseKeeper(
            self._store,
            self.holder,
            self.lease_ttl,
            on_waiting=self._on_lease_waiting,
            on_lost=self._on_lease_lost,
        )

    # The lease keeper's state, under the names the rest of the client reads.
    @property
    def _lease(self) -> Lease | None:
        return self._leases.lease

    @property
    def _foreign_lease(self) -> LeaseInfo | None:
        return self._leases.foreign

    @property
    def _have_lease(self) -> Flag:
        return self._leases.held

    @property
    def _lease_lost_flag(self) -> bool:
        return self._leases.lost

    # Public API -------------------------------------------------------------------

    @property
    def telegram(self) -> Any:
        """The ``telethon.TelegramClient``: the whole Telethon API (available once entered;
        register event handlers earlier with `on` or `add_event_handler`)."""
        if self._telegram is None:
            raise RuntimeError(
                "client.telegram exists once the client is entered (async with); "
                "register event handlers before that with client.on(event)"
            )
        return self._telegram

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def store(self) -> SessionStore:
        return self._store

    @property
    def status_url(self) -> str | None:
        """``http://host:port`` of the status endpoint once entered (None without one)."""
        return self._status.url if self._status is not None else None

    def on(self, event: Any) -> Callable[[H], H]:
        """Decorator: ``@client.on(events.NewMessage)`` registers a Telethon event handler
        (a coroutine function), like ``TelegramClient.on``, but also before the client is
        entered: it is then registered when ``client.telegram`` comes to exist, before the
        first connect, so no update is missed."""

        def decorator(callback: H) -> H:
            self.add_event_handler(callback, event)
            return callback

        return decorator

    def add_event_handler(self, callback: Callable[..., Any], event: Any = None) -> None:
        """``TelegramClient.add_event_handler``, usable before entering (registered on entry,
        before the first connect) and after (registered at once)."""
        if self._telegram is not None:
            self._telegram.add_event_handler(callback, event)
        else:
            self._early_handlers.append((callback, event))

    def on_connected(self, callback: C) -> C:
        """Call ``callback(StateChange)`` on every transition to CONNECTED (also a decorator)."""
        return self._callbacks.add("connected", callback)

    def on_disconnected(self, callback: C) -> C:
        """Call ``callback`` whenever a live link (CATCHING_UP/CONNECTED) is lost."""
        return self._callbacks.add("disconnected", callback)

    def on_reconnecting(self, callback: C) -> C:
        """Call ``callback`` before each reconnect attempt (e.g. to rotate a proxy)."""
        return self._callbacks.add("reconnecting", callback)

    def on_state_change(self, callback: C) -> C:
        """Call ``callback`` on every transition."""
        return self._callbacks.add("state_change", callback)

    def on_auth_lost(self, callback: C) -> C:
        """Call ``callback`` when the server stops accepting the auth key (AUTH_LOST)."""
        return self._callbacks.add("auth_lost", callback)

    def on_rejected(self, callback: C) -> C:
        """Call ``callback`` when the server refuses the app's api_id/api_hash (REJECTED)."""
        return self._callbacks.add("rejected", callback)

    def health(self) -> Health:
        """A snapshot of the link, the session and the lease; never does I/O."""
        now = time.time()
        bound = self.keepalive_policy.detection_bound
        pong_fresh = self._last_pong_at is not None and now - self._last_pong_at <= bound
        session = self._session
        store_info = StoreInfo(
            kind=type(self._store).__name__,
            location=self._store.describe(),
            last_save_at=(
                now - (time.monotonic() - session.last_saved_at)
                if session is not None and session.last_saved_at is not None
                else None
            ),
            last_save_error=(
                store_error_text(self._store.describe(), session.last_save_error)
                if session is not None and session.last_save_error is not None
                else None
            ),
            save_failures=session.save_failures if session is not None else 0,
        )
        lease: LeaseInfo | None = None
        if self._lease is not None:
            lease = LeaseInfo(
                holder=self._lease.holder, expires_at=self._lease.expires_at, ours=True
            )
        elif self._foreign_lease is not None:
            lease = self._foreign_lease
        state = self._state
        return Health(
            state=state,
            connected=state.link_up,
            authorized=self._authorized,
            healthy=state is ConnectionState.CONNECTED and self._authorized is True and pong_fresh,
            since=self._since,
            last_pong_at=self._last_pong_at,
            last_update_at=self._last_update_at,
            last_request_ok_at=self._last_request_ok_at,
            rtt=self._rtt,
            clock_skew=_compat.clock_offset(self._telegram) if self._telegram is not None else None,
            attempt=self._attempt,
            reconnects_total=self._reconnects_total,
            last_error=self._last_error,
            lease=lease,
            store=store_info,
            reason=self._reason,
            detail=self._detail,
            status_error=self._status.error if self._status is not None else None,
        )

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for CONNECTED. Raises AuthLostError in AUTH_LOST, AppRejectedError in
        REJECTED, NotConnectedError after GAVE_UP or CLOSED, TimeoutError when ``timeout``
        passes first."""
        with anyio.fail_after(timeout):
            while True:
                state = self._state
                if state is ConnectionState.CONNECTED:
                    return
                if state is ConnectionState.AUTH_LOST:
                    raise AuthLostError(
                        f"the session's auth key is no longer accepted ({self._detail})",
                        reason=self._detail,
                    )
                if state is ConnectionState.REJECTED:
                    raise self._rejected_error()
                if state in (ConnectionState.GAVE_UP, ConnectionState.CLOSED):
                    raise NotConnectedError(f"the client is {state.value}: {self._detail}")
                await self._state_changed.wait()

    async def run_until_signal(self) -> int:
        """Return the signal number on SIGTERM or SIGINT; leaving the block then shuts down."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                return int(signum)
        return 0  # pragma: no cover - the receiver never ends on its own

    # Lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ResilientClient:
        if self._entered:
            raise RuntimeError("a ResilientClient can be entered once; create a new one")
        self._entered = True
        try:
            self._callbacks.attach(lambda fn: self._spawn("callbacks", fn))
            if self._status is not None:
                await self._tasks.start("status", self._status.run)
            # Read once before waiting for the lease: a corrupt session fails fast.
            await self._store.load()
            await self._leases.acquire()
            self._session = await StoreSession.open(self._store, flush_interval=self.flush_interval)
            self._session.save_listeners.append(self._notify_save)
            self._was_authorized = self._session.ever_authorized
            # Until it has caught up on a link, the client writes back the update state it
            # loaded: a client that never connected knows no newer one.
            self._session.hold_update_state()
            self._telegram = self._build_telegram(self._session)
            self._spawn("supervisor", self._supervise)
            self._spawn("keepalive", run_keepalive, self)
            self._spawn("housekeeping", self._housekeeping)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._shutdown()

    def _spawn(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> object:
        """Start a guarded background task owned by this client (None once closing)."""
        return self._tasks.spawn(name, self._guarded, name, fn, *args)

    async def _shutdown(self) -> None:
        """Stop the tasks, disconnect, flush the session, release the lease — bounded."""
        self._closing = True
        started = time.monotonic()
        # AUTH_LOST and REJECTED write nothing: the store is left as it was.
        auth_lost = self._state in (ConnectionState.AUTH_LOST, ConnectionState.REJECTED)
        with anyio.move_on_after(self.shutdown_timeout) as scope:
            if self._post_connect is not None:
                self._post_connect.cancel()
            if self._telegram is not None and self._transport_up and not auth_lost:
                await self._quiesce(self._telegram)
            if self._telegram is not None:
                if auth_lost and self._session is not None:
                    self._session.discard_changes()
                log.debug("shutdown: disconnecting")
                try:
                    await self._telegram.disconnect()
                except Exception as exc:  # noqa: BLE001 - shutting down anyway
                    log.warning("disconnect failed during shutdown: %s", _describe(exc))
                _compat.end_queued(self._telegram)  # their callers hear it now, not at a deadline
            log.debug("shutdown: flushing the session")
            if self._session is not None and not auth_lost:
                try:
                    await self._session.aclose()
                except Exception as exc:  # noqa: BLE001 - reported, the lease is still released
                    log.error(  # noqa: TRY400 - one line; the cause is in the message
                        "shutting down: %s", self._save_problem(exc)
                    )
            elif self._session is not None:
                # What Telethon's disconnect() put in the session since is not written either.
                self._session.discard_changes()
                await self._session.aclose()
            log.debug("shutdown: releasing the lease")
            await self._leases.release()
            if not self._state.terminal:
                self._transition(ConnectionState.CLOSED, StateReason.USER, "client closed")
            with anyio.move_on_after(1.0):
                await self._callbacks.drain()
        if scope.cancelled_caught:
            log.error(
                "shutdown did not finish within shutdown_timeout=%.1fs", self.shutdown_timeout
            )
            if not self._state.terminal:
                self._transition(ConnectionState.CLOSED, StateReason.USER, "shutdown timed out")
        self._callbacks.close()
        self._leases.close()
        # Our tasks end before the store closes: the lease and flush loops use it.
        await self._tasks.aclose()
        self._deadlines.close()
        try:
            await self._store.aclose()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the store failed: %s", _describe(exc))
        log.debug("shut down in %.2fs", time.monotonic() - started)

    async def _quiesce(self, telegram: _Telegram) -> None:
        """Stop taking updates, then let the handlers finish the ones already taken, so that
        the update state saved on the way out covers exactly what was handled."""
        self.abort_link(StateReason.USER, "shutting down", quiet=True)  # no reconnect follows
        limit = time.monotonic() + min(2.0, self.shutdown_timeout / 2)
        quiet = 0
        while time.monotonic() < limit and quiet < 2:
            quiet = quiet + 1 if _compat.handlers_idle(telegram) else 0
            await asyncio.sleep(0.02)

    def _build_telegram(self, session: StoreSession) -> _Telegram:
        connection = make_connection_class(self._connection_base)
        install_log_filter(self._telethon_kwargs.get("base_logger"))
        client = _Telegram(
            session,
            self._api_id,
            self._api_hash,
            connection=connection,
            connection_retries=-1,  # forever; the policy paces and ends attempts
            retry_delay=0,
            auto_reconnect=True,
            catch_up=True,
            timeout=self.reconnect_policy.connect_timeout,
            request_retries=0,
            raise_last_call_error=True,
            flood_sleep_threshold=0,
            **self._telethon_kwargs,
        )
        client._rtg_owner = self
        _compat.check(client)
        client.add_event_handler(self._on_raw_update, events.Raw)
        for callback, event in self._early_handlers:
            client.add_event_handler(callback, event)
        self._early_handlers.clear()
        return client

    async def _guarded(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a background task; a bug in it is logged, never fatal for the host."""
        try:
            await fn(*args)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            self._last_error = _describe(exc)
            log.exception("resilient_tg %s task failed (a bug); the client carries on", name)

    # State ----------------------------------------------------------------------------

    def _transition(
        self,
        new: ConnectionState,
        reason: StateReason,
        detail: str = "",
        *,
        error: BaseException | None = None,
        next_delay: float | None = None,
        message: str | None = None,
    ) -> None:
        old = self._state
        if old.terminal and new is not old and old is not ConnectionState.CLOSED:
            return  # AUTH_LOST, REJECTED and GAVE_UP are final (only leaving writes CLOSED)
        if old is ConnectionState.CLOSED:
            return
        if old.link_up and new in (ConnectionState.RECONNECTING, ConnectionState.CONNECTING):
            self._reconnects_total += 1
        self._state = new
        self._reason = reason
        self._detail = detail
        self._since = time.time()
        if error is not None:
            self._last_error = _describe(error)
        change = StateChange(
            old=old,
            new=new,
            reason=reason,
            detail=detail,
            attempt=self._attempt,
            next_delay=next_delay,
            error=error,
        )
        log.info("%s", message or f"{new.value}: {detail or reason.value}")
        self._notify(lambda listener: listener.on_transition(change))
        self._callbacks.emit("state_change", change)
        if new is ConnectionState.CONNECTED:
            self._callbacks.emit("connected", change)
        if old.link_up and not new.link_up:
            self._callbacks.emit("disconnected", change)
        if new is ConnectionState.AUTH_LOST:
            self._callbacks.emit("auth_lost", change)
        if new is ConnectionState.REJECTED:
            self._callbacks.emit("rejected", change)
        waiter, self._state_changed = self._state_changed, Flag()
        waiter.set()

    # LinkObserver: called by the connection class ------------------------------------

    async def before_attempt(self, conn: Any) -> None:
        while True:
            if self._closing or self._gave_up or self._lease_lost_flag or self._state.terminal:
                await asyncio.Event().wait()  # cancelled by disconnect()
            if self._first_attempt:
                self._first_attempt = False
                self._attempt = 0
                self._transition(
                    ConnectionState.CONNECTING,
                    StateReason.START,
                    f"connecting to {_address(conn)}",
                    message=f"connecting to {_address(conn)}",
                )
                break
            if self._next_attempt_at is None:  # a loss we did not see (defensive)
                self._schedule_retry(StateReason.TRANSPORT_ERROR, None, "link lost")
            assert self._next_attempt_at is not None
            wait = self._next_attempt_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._closing or self._lease_lost_flag:
                continue
            elapsed = time.monotonic() - (self._outage_started or time.monotonic())
            if self.reconnect_policy.gives_up(self._attempt, elapsed):
                self._give_up(elapsed)
                continue
            self._next_attempt_at = None
            change_detail = f"reconnecting to {_address(conn)} (attempt {self._attempt})"
            self._transition(
                ConnectionState.CONNECTING, StateReason.START, change_detail, message=change_detail
            )
            self._callbacks.emit("reconnecting", self._last_change())
            with anyio.move_on_after(self.reconnect_policy.connect_timeout):
                await self._callbacks.drain()
            break
        self._attempt_started = time.monotonic()
        self._conn = conn

    def attempt_failed(self, conn: Any, error: BaseException) -> None:
        reason = _classify(error)
        self._schedule_retry(reason, error, f"connect failed: {_describe(error)}")

    def transport_up(self, conn: Any) -> None:
        if self._telegram is not None:
            _compat.start_link(self._telegram, conn)  # nothing stale goes out on it
        self._conn = conn
        self._transport_up = True
        generation = self._generation
        if self._post_connect is not None:
            self._post_connect.cancel()
        task = self._tasks.spawn(
            "post-connect", self._guarded, "post-connect", self._run_post_connect, conn, generation
        )
        self._post_connect = task
        if task is not None:
            task.add_done_callback(self._post_connect_done)

    def transport_down(self, conn: Any, error: BaseException | None) -> None:
        if conn is not self._conn:
            return
        self._transport_up = False
        self._generation += 1
        self._established.clear()
        self._carrying.clear()
        if self._post_connect is not None:
            self._post_connect.cancel()
            self._post_connect = None
        if self._closing or self._state.terminal or self._lease_lost_flag:
            return
        now = time.monotonic()
        if self._connected_since is not None and now - self._connected_since >= (
            self.reconnect_policy.reset_after
        ):
            self._attempt = 0
            self._outage_started = None
        self._connected_since = None
        reason = _classify(error) if error is not None else StateReason.EOF
        lived = ""
        if isinstance(error, LinkAborted):
            lived = error.detail
        else:
            lived = _describe(error) if error is not None else "closed by the server"
        if self._state.link_up:
            self._schedule_retry(reason, error, f"link lost: {lived}")
        else:
            # The link of a connect attempt, which never answered (e.g. a TCP connect
            # accepted into a black hole): a failed attempt, not a lost link.
            attempt = f"connect attempt {self._attempt}" if self._attempt else "connect attempt"
            self._schedule_retry(reason, error, f"{attempt}: {lived}")

    def packet_received(self, conn: Any) -> None:
        pass  # kept for observers that count traffic; the keepalive measures liveness

    def _schedule_retry(self, reason: StateReason, error: BaseException | None, what: str) -> None:
        if self._closing or self._state.terminal:
            return
        if self._outage_started is None:
            self._outage_started = time.monotonic()
        self._attempt += 1
        elapsed = time.monotonic() - self._outage_started
        delay = self.reconnect_policy.delay(self._attempt, self._rng, elapsed)
        self._next_attempt_at = time.monotonic() + delay
        self._transition(
            ConnectionState.RECONNECTING,
            reason,
            what,
            error=error,
            next_delay=delay,
            message=f"{what}; reconnecting in {delay:.1f}s (attempt {self._attempt})",
        )

    def _give_up(self, elapsed: float) -> None:
        self._gave_up = True
        policy = self.reconnect_policy
        limit = (
            f"max_attempts={policy.max_attempts}"
            if policy.max_attempts is not None and self._attempt > policy.max_attempts
            else f"max_elapsed={policy.max_elapsed}s"
        )
        self._transition(
            ConnectionState.GAVE_UP,
            StateReason.GAVE_UP,
            f"gave up after {self._attempt - 1} attempts in {elapsed:.1f}s ({limit})",
        )
        self._spawn("give-up", self._disconnect_telegram)

    def _last_change(self) -> StateChange:
        return StateChange(
            old=self._state,
            new=self._state,
            reason=self._reason or StateReason.START,
            detail=self._detail,
            attempt=self._attempt,
        )

    def abort_link(self, reason: StateReason, detail: str, *, quiet: bool = False) -> None:
        """Close the current socket; Telethon then reconnects (paced by the policy)."""
        conn = self._conn
        if conn is not None and self._transport_up:
            conn.abort(LinkAborted(reason, detail, quiet=quiet))

    # Post-connect: probe, catch up, CONNECTED --------------------------------------------

    def _post_connect_done(self, task: asyncio.Task[None]) -> None:
        if self._post_connect is task:
            self._post_connect = None  # a finished task keeps its frame's results alive

    async def _run_post_connect(self, conn: Any, generation: int) -> None:
        telegram = self._telegram
        assert telegram is not None
        timeout = self.reconnect_policy.connect_timeout
        started = self._attempt_started or time.monotonic()
        try:
            with anyio.fail_after(timeout):
                await self._sender_ready.wait()
            if generation != self._generation:
                return
            self._carrying.set()
            state = await self._probe(telegram, generation, timeout)
            if state is None:
                return
            if self._state.terminal:
                return
            if self._authorized:
                self._transition(
                    ConnectionState.CATCHING_UP,
                    StateReason.CONNECTED,
                    "link up; fetching missed updates",
                    message=f"link up to {_address(conn)}; catching up on missed updates",
                )
                await self._catch_up(telegram, state.pts, generation)
            await self._make_durable()
        except TimeoutError:
            if generation == self._generation:
                # Bytes that never made a packet: not a slow server, a peer that is not MTProto.
                garbage = not_mtproto_so_far(conn, f"nothing more within {timeout:.1f}s")
                if garbage is not None:
                    self.abort_link(StateReason.TRANSPORT_ERROR, garbage)
                else:
                    self.abort_link(
                        StateReason.CONNECT_TIMEOUT,
                        f"no answer within connect_timeout={timeout:.1f}s",
                    )
            return
        except (ConnectionError, OSError, errors.AuthKeyNotFound, errors.InvalidBufferError):
            return  # the link went down again; transport_down or the supervisor took over
        except errors.RPCError as exc:
            # An answer we cannot connect with (CONNECTION_NOT_INITED, a 400...): retry later.
            if generation == self._generation and not self._state.terminal:
                self.abort_link(
                    StateReason.SERVER_ERROR, f"the server answered {_describe(exc)} on connect"
                )
            return
        if generation != self._generation or self._closing:
            return
        if self._authorized and self._session is not None:
            self._session.release_update_state()  # probed and caught up: the state is learned
        self._established.set()
        self._connected_since = time.monotonic()
        self._outage_started = None
        self._attempt = 0
        elapsed = time.monotonic() - started
        auth = "" if self._authorized else _NOT_LOGGED_IN
        self._transition(
            ConnectionState.CONNECTED,
            StateReason.CONNECTED,
            f"connected to {_address(conn)}{auth}",
            message=f"connected to {_address(conn)} (dc {_dc(telegram)}) in {elapsed:.2f}s{auth}",
        )

    async def _probe(self, telegram: _Telegram, generation: int, limit: float) -> Any:
        """updates.getState: proves the link carries answers and tells if we are authorized."""
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sent = time.monotonic()
            try:
                with anyio.fail_after(remaining):
                    state = await _compat.send_raw(telegram, functions.updates.GetStateRequest())
            except _FLOOD as exc:
                seconds = max(1, int(exc.seconds))
                self._detail = f"FLOOD_WAIT {seconds}s on reconnect"
                log.info("flood wait of %ds on reconnect; waiting it out", seconds)
                await asyncio.sleep(seconds)
                deadline = time.monotonic() + limit
                continue
            except _KEY_DEAD as exc:
                self._auth_lost(_rpc_name(exc), exc)
                return None
            except errors.AuthKeyUnregisteredError as exc:
                if self._was_authorized:
                    self._auth_lost("AUTH_KEY_UNREGISTERED", exc)
                    return None
                self._authorized = False
                return _NoState()
            except errors.UnauthorizedError:
                self._authorized = False
                return _NoState()
            except _TRANSIENT_RPC:
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            except errors.RPCError as exc:
                name = app_rejected(exc)
                if name is None:
                    raise
                self._rejected(name, exc)
                return None
            self._authorized = True
            self._was_authorized = True
            if self._session is not None:
                self._session.mark_authorized()  # durable before CONNECTED (_make_durable)
            self._last_request_ok_at = time.time()
            # The answer is the link's first pong: healthy as soon as CONNECTED is reported.
            self._record_pong(time.monotonic() - sent)
            return state

    async def _catch_up(self, telegram: _Telegram, server_pts: int, generation: int) -> None:
        """Make Telethon fetch the difference until its pts reaches the server's."""
        deadline_span = max(self.reconnect_policy.connect_timeout, 5.0)
        rounds = 0
        while generation == self._generation:
            local = _compat.local_pts(telegram)
            if local is None or local >= server_pts:
                return
            rounds += 1
            await telegram.catch_up()
            deadline = time.monotonic() + deadline_span
            while time.monotonic() < deadline and generation == self._generation:
                local = _compat.local_pts(telegram)
                if local is not None and local >= server_pts:
                    return
                await asyncio.sleep(0.01)
            if rounds >= 5:
                log.warning(
                    "catch-up did not reach pts %d after %d rounds; carrying on", server_pts, rounds
                )
                return
            fresh = await _compat.send_raw(telegram, functions.updates.GetStateRequest())
            server_pts = fresh.pts

    async def _make_durable(self) -> None:
        """The auth key must be in the store before the first CONNECTED is reported."""
        session = self._session
        assert session is not None
        delay = 0.2
        warned = ""
        while session.dirty and not self._closing:
            try:
                await session.flush()
            except Exception as exc:  # noqa: BLE001 - any store failure: retry, visible in health
                # Keeps the client from CONNECTED: health's detail says why (and last_error,
                # through _notify_save); a WARNING whenever the store's answer changes.
                problem = self._save_problem(exc)
                self._detail = f"{problem}; retrying"
                if problem != warned:
                    log.warning("%s; retrying in %.1fs", problem, delay)
                    warned = problem
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                return

    # AUTH_LOST ------------------------------------------------------------------------

    def _auth_lost(self, why: str, error: BaseException | None) -> None:
        if self._state is ConnectionState.AUTH_LOST or self._closing:
            return
        self._authorized = False
        if self._session is not None:
            self._session.discard_changes()
        self._transition(
            ConnectionState.AUTH_LOST,
            StateReason.AUTH_ERROR,
            why,
            error=error,
            message=f"auth lost: {why}; not retrying, the store is left as it was",
        )
        self._spawn("auth-lost", self._disconnect_telegram)

    # REJECTED ------------------------------------------------------------------------

    def _rejected(self, name: str, error: BaseException) -> None:
        """The server refuses the app (API_ID_INVALID...): final, the store is left as it was."""
        if self._state.terminal or self._closing:
            return
        if self._session is not None:
            self._session.discard_changes()
        self._rejected_reason = name
        self._transition(
            ConnectionState.REJECTED,
            StateReason.APP_REJECTED,
            f"{name}: the server refuses this api_id/api_hash",
            error=error,
            message=(
                f"rejected: the server refuses this api_id/api_hash ({name}); not retrying, "
                "fix the configuration; the store is left as it was"
            ),
        )
        self._spawn("rejected", self._disconnect_telegram)

    def _rejected_error(self) -> AppRejectedError:
        name = self._rejected_reason
        return AppRejectedError(
            f"the server refuses this app's api_id/api_hash ({name}); fix the configuration",
            reason=name,
        )

    async def _disconnect_telegram(self) -> None:
        if self._telegram is not None:
            await self._telegram.disconnect()
            _compat.end_queued(self._telegram)  # their callers hear it now, not at a deadline

    # Supervisor -------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self._closing or self._state.terminal

    async def _supervise(self) -> None:
        """Connect cycles: connect, live until Telethon fully disconnects, decide what next."""
        telegram = self._telegram
        assert telegram is not None
        # The connection Telethon builds inside connect() (in this task) reports to us.
        current_observer.set(self)
        while not self._stopping():
            await self._have_lease.wait()
            if self._stopping():
                return
            self._sender_ready.clear()
            self._established.clear()
            self._carrying.clear()
            outcome = await self._connect_cycle(telegram)
            if outcome == "stop":
                return

    async def _connect_cycle(self, telegram: _Telegram) -> str:
        """One connect() .. disconnected cycle; returns "again" or "stop"."""
        try:
            await telegram.connect()
        except errors.AuthKeyNotFound as exc:
            return "again" if await self._key_unknown(exc) else "stop"
        except (ConnectionError, OSError) as exc:
            if self._lease_lost_flag:
                return "again"
            if self._stopping():
                return "stop"
            log.warning("connect ended with %s; starting over", _describe(exc))
            return "again"
        except errors.RPCError as exc:
            return await self._connect_answered(telegram, exc)
        except CONNECT_FAILURES as exc:  # the peer's bytes are not MTProto, or it hung up
            return await self._connect_failed(telegram, explain_failure(self._conn, exc))
        self._sender_ready.set()
        try:
            await telegram.disconnected
        except errors.AuthKeyNotFound as exc:
            return "again" if await self._key_unknown(exc) else "stop"
        except Exception as exc:  # noqa: BLE001 - Telethon gave the link up; we do not
            if self._stopping():
                return "stop"
            log.warning("Telethon dropped the link (%s); reconnecting", _describe(exc))
            await telegram.disconnect()
            self._schedule_retry(_classify(exc), exc, f"link dropped: {_describe(exc)}")
            return "again"
        if self._stopping():
            return "stop"
        if self._lease_lost_flag:
            return "again"
        failure = _compat.updates_error(telegram)
        if failure is not None and isinstance(
            failure, (errors.UnauthorizedError, errors.AuthKeyError, *_KEY_DEAD)
        ):
            self._auth_lost(_rpc_name(failure), failure)
            return "stop"
        # Someone called client.telegram.disconnect() (or log_out()): respect it.
        self._transition(
            ConnectionState.CLOSED, StateReason.USER, "disconnected by the application"
        )
        return "stop"

    async def _connect_answered(self, telegram: _Telegram, exc: errors.RPCError) -> str:
        """initConnection was answered with an error: final if it refuses the app or the
        key, else retried like any failed attempt (a 500, a FLOOD_WAIT...)."""
        name = app_rejected(exc)
        if name is not None:
            self._rejected(name, exc)
            return "stop"
        if isinstance(exc, _KEY_DEAD):
            self._auth_lost(_rpc_name(exc), exc)
            return "stop"
        outcome = await self._connect_failed(telegram, exc)
        if isinstance(exc, _FLOOD) and self._next_attempt_at is not None:
            self._next_attempt_at = max(
                self._next_attempt_at, time.monotonic() + max(1, int(exc.seconds))
            )
        return outcome

    async def _connect_failed(self, telegram: _Telegram, error: BaseException) -> str:
        """connect() failed with the link up (Telethon leaves it open): drop the link and
        retry, paced by the policy like any transport error."""
        if self._stopping():
            return "stop"
        if self._lease_lost_flag:
            return "again"
        conn = self._conn
        if conn is not None and hasattr(conn, "note_failure"):
            conn.note_failure(error)  # transport_down reports it
        await _compat.drop_link(telegram)
        if self._next_attempt_at is None and not self._stopping():
            self._schedule_retry(_classify(error), error, f"connect failed: {_describe(error)}")
        return "again"

    async def _key_unknown(self, exc: BaseException) -> bool:
        """Transport -404. True to carry on (a never-used key is replaced), False to stop."""
        if self._was_authorized:
            self._auth_lost("the server no longer knows the auth key (-404)", exc)
            return False
        log.info("the server does not know our (never authorized) auth key; creating a new one")
        assert self._session is not None
        assert self._telegram is not None
        # Telethon also puts the -404 into its disconnected future (now or in a moment):
        # take it, so that it is not reported as an exception never retrieved.
        self._telegram.disconnected.add_done_callback(
            lambda ended: ended.cancelled() or ended.exception()
        )
        await self._telegram.disconnect()
        _compat.forget_auth_key(self._telegram)
        self._first_attempt = True
        return True

    # Lease ------------------------------------------------------------------------------

    def _on_lease_waiting(self, holder: str) -> None:
        if self._state is not ConnectionState.WAITING_LEASE:
            self._transition(
                ConnectionState.WAITING_LEASE,
                StateReason.LEASE,
                f"session leased to {holder}",
                message=f"waiting for the session lease held by {holder}",
            )

    def _on_lease_lost(self, why: str) -> None:
        """Two processes must never use one key: drop the link now (called by the lease
        keeper, from its expiry timer too), then wait for the lease in the background."""
        if self._closing:
            return
        if self._session is not None:
            self._session.discard_changes()
        self._transition(
            ConnectionState.WAITING_LEASE,
            StateReason.LEASE,
            f"lease lost: {why}",
            message=f"lease lost ({why}); dropping the link and waiting for it",
        )
        # The recovery's first step closes the socket, within a loop iteration. (Not an
        # abort here: that starts Telethon's own reconnect, and cancelling it early leaves
        # its sender unable to send after the next connect.)
        self._spawn("lease-recovery", self._recover_lease)

    async def _recover_lease(self) -> None:
        """After a loss: close the link, take the lease again, reload the session, resume."""
        if self._telegram is not None:
            try:
                await self._telegram.disconnect()
            except Exception as exc:  # noqa: BLE001 - the link is closed either way
                log.warning("disconnect after the lease loss failed: %s", _describe(exc))
        while not self._closing:
            await self._leases.acquire(retry_failures=True, announce=False)
            try:
                with anyio.fail_after(self.lease_ttl / 3):
                    data = await self._store.load()
            except Exception as exc:  # noqa: BLE001 - store outage: retry, we hold the lease
                log.warning(
                    "could not reload the session after taking the lease: %s", _describe(exc)
                )
                await asyncio.sleep(min(1.0, self.lease_ttl / 6))
                continue
            if self._leases.lease is None:
                continue  # lost again while reloading
            if self._session is not None:
                self._session.reload(data)
                self._session.hold_update_state()  # the stored state is the newest until caught up
                self._was_authorized = self._session.ever_authorized
            self._first_attempt = True
            self._leases.resume()  # the supervisor connects again
            return

    async def _housekeeping(self) -> None:
        """Renew the lease every lease_ttl/3 and flush the update state every
        flush_interval: one task for both, as each client's tasks count in a fleet. (The
        lease keeper's own timer drops the link if renewals hang.)"""
        renew_every = self.lease_ttl / 3
        next_renew = time.monotonic() + renew_every
        next_flush = time.monotonic() + self.flush_interval
        while not self._closing:
            await asyncio.sleep(max(0.0, min(next_renew, next_flush) - time.monotonic()))
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + renew_every
                await self._leases.renew()
            if now >= next_flush and not self._closing:
                await self._flush_update_state()
                next_flush = time.monotonic() + self.flush_interval

    # Background flush ---------------------------------------------------------------------

    async def _flush_update_state(self) -> None:
        """Keep the stored update state at most ~flush_interval behind what was handled."""
        telegram, session = self._telegram, self._session
        if (
            telegram is None
            or session is None
            or self._state not in (ConnectionState.CONNECTED, ConnectionState.CATCHING_UP)
            or not self._authorized
        ):
            return
        await _compat.save_states(telegram)
        if not session.dirty:
            return
        # Bounded, so that a hanging store cannot hold up the lease renewal behind it; the
        # session stays dirty and the next round (or the background writer) tries again.
        lost: LeaseLostError | None = None
        with anyio.move_on_after(self.lease_ttl / 6):
            try:
                await session.flush()
            except LeaseLostError as exc:
                lost = exc
            except Exception as exc:  # noqa: BLE001 - visible in health, retried next time
                log.debug("periodic session flush failed: %s", _describe(exc))
        if lost is not None:
            self._leases.drop(_describe(lost))

    # Requests -------------------------------------------------------------------------------

    async def _call(self, request: Any, ordered: bool) -> Any:
        """Every request through ``client.telegram``: wait for the link within
        request_timeout, retry what is transient, map what the caller must not see.

        It ends once: its answer or RPC error (after transient errors, the last one);
        NotConnectedError (never sent, withdrawn); ResultUnknownError (sent, unanswered,
        withdrawn); ResultLostError; AuthLostError; or the caller's own cancellation
        (withdrawn too). A request nobody waits for is never sent or resent."""
        telegram = self._telegram
        assert telegram is not None
        if not self._carrying.is_set() and not isinstance(request, _INTERNAL_REQUESTS):
            waiting = _compat.queued_requests(telegram) + self._waiting_for_sender
            if waiting >= self.max_queued_requests:
                self._raise_if_final(request)
                raise NotConnectedError(
                    f"{_request_name(request)} was not sent: the queue is full ({waiting} "
                    f"requests wait for the link, max_queued_requests={self.max_queued_requests};"
                    f" link {self._state.value})"
                )
        deadline = time.monotonic() + self.request_timeout
        generation = self._generation
        # A try Telethon dropped after giving it a msg_id (a full disconnect): it may
        # have taken effect, so a timeout is then ResultUnknownError.
        sent_before = False
        server_error: BaseException | None = None  # the last transient RPC error
        while True:
            self._raise_if_final(request, sent_before)
            if not _compat.sender_user_connected(telegram) and not await self._wait_user_connected(
                deadline
            ):
                raise self._ending(telegram, request, sent_before, server_error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._ending(telegram, request, sent_before, server_error)
            # The try itself is inline (no helper coroutine or task) on Python 3.11+: every
            # object allocated per request adds to garbage-collection pauses, which show
            # in the tail latency (benchmarks/overhead.py).
            if _CAN_TELL_CANCELLATIONS:
                task: Any = asyncio.current_task()  # cancelling()/uncancel(): 3.11+
                watch = self._deadlines.add(task, remaining)
                exc: BaseException | None = None
                try:
                    value = await TelegramClient.__call__(telegram, request, ordered=ordered)
                except asyncio.CancelledError as cancelled:
                    if watch.fired:
                        task.uncancel()
                        ending = self._ending(
                            telegram,
                            request,
                            sent_before,
                            _rpc_context(cancelled) or server_error,
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
                    self._deadlines.finish(watch)
            else:
                outcome, value = await self._try_once_in_task(
                    telegram, request, ordered, remaining, sent_before, server_error
                )
                exc = value if outcome == "error" else None
            if outcome == "cancelled":
                # Telethon cancelled it (a full disconnect: lease loss, shutdown) after
                # giving it a msg_id: never a CancelledError for the caller.
                sent_before = True
                self._raise_if_final(request, sent_before)
                continue
            if exc is None:
                result = value
                self._last_request_ok_at = time.time()
                if isinstance(request, _LOGIN_REQUESTS) and _is_authorization(result):
                    self._on_login()
                elif isinstance(request, functions.auth.LogOutRequest):
                    self._authorized = False
                return result
            if isinstance(exc, _FLOOD):
                seconds = max(1, int(exc.seconds))
                if seconds <= self.flood_sleep_threshold and seconds < deadline - time.monotonic():
                    log.info("flood wait of %ds on %s; sleeping", seconds, type(request).__name__)
                    await asyncio.sleep(seconds)
                    continue
                raise exc
            if isinstance(exc, errors.RandomIdDuplicateError):
                if self._generation != generation:
                    raise ResultLostError(
                        f"{type(request).__name__} took effect on the server, but its answer was "
                        "lost with the link (the resend was refused as RANDOM_ID_DUPLICATE)"
                    ) from exc
                raise exc
            if isinstance(exc, _TRANSIENT_RPC):
                # The server answered: a later timeout reports this, not silence.
                server_error = exc
                self._last_error = _describe(exc)
                if deadline - time.monotonic() > _TRANSIENT_PAUSE:
                    await asyncio.sleep(_TRANSIENT_PAUSE)
                    continue
                raise exc
            if isinstance(exc, _compat.Withdrawn):  # the client stopped: see end_queued
                sent_before = sent_before or exc.sent
                self._raise_if_final(request, sent_before)
                raise self._ending(telegram, request, sent_before, server_error) from exc
            if isinstance(exc, errors.AuthKeyNotFound):
                sent_before = True  # set on the pending requests of a dropped link
                continue
            if isinstance(exc, ConnectionError) and not isinstance(exc, NotConnectedError):
                # Telethon's own "disconnected" errors: wait for the link instead.
                continue
            if isinstance(exc, _KEY_DEAD):
                self._auth_lost(_rpc_name(exc), exc)
            elif isinstance(exc, errors.AuthKeyUnregisteredError) and self._authorized:
                self._auth_lost("AUTH_KEY_UNREGISTERED", exc)
            raise exc

    async def _try_once_in_task(
        self,
        telegram: _Telegram,
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
            raise self._ending(telegram, request, sent_before, answer)
        if task.cancelled():
            return "cancelled", None
        exc = task.exception()
        return ("error", exc) if exc is not None else ("ok", task.result())

    def _raise_if_final(self, request: Any = None, sent: bool = False) -> None:
        """Raise if the client can carry no request any more; ``sent``: this one had
        been given a msg_id, so it may have taken effect."""
        if self._state is ConnectionState.AUTH_LOST:
            raise AuthLostError(
                f"the session's auth key is no longer accepted ({self._detail})",
                reason=self._detail,
            )
        if self._state is ConnectionState.REJECTED:
            raise self._rejected_error()
        if self._state in (ConnectionState.GAVE_UP, ConnectionState.CLOSED) or self._closing:
            if sent:
                raise ResultUnknownError(
                    f"{_request_name(request)} was sent, but the client is {self._state.value} "
                    "and its answer can no longer come; it may or may not have taken effect",
                    request=request,
                )
            raise NotConnectedError(f"the client is {self._state.value}; no request can be sent")

    def _ending(
        self,
        telegram: _Telegram,
        request: Any,
        sent_before: bool,
        server_error: BaseException | None,
    ) -> BaseException:
        """How a request without an answer within request_timeout ends. Withdraws it from
        Telethon first, so that it is never sent (or resent) after this."""
        where = _compat.withdraw(telegram, request)
        link = f"link {self._state.value}{': ' + self._detail if self._detail else ''}"
        limit = f"request_timeout={self.request_timeout:.1f}s"
        if where == _compat.SENT or sent_before:
            return ResultUnknownError(
                f"{_request_name(request)} was sent but not answered within {limit} ({link}); "
                "it was withdrawn and will not be resent, and may or may not have taken effect",
                request=request,
            )
        if server_error is not None:
            return server_error  # every try was answered, with this error last
        return NotConnectedError(
            f"{_request_name(request)} was not sent: no link carried it within {limit} "
            f"({link}); it was withdrawn and will never be sent"
        )

    async def _wait_user_connected(self, deadline: float) -> bool:
        """Wait until Telethon's sender is user-connected; False if ``deadline`` passes."""
        telegram = self._telegram
        assert telegram is not None
        self._waiting_for_sender += 1
        try:
            while not _compat.sender_user_connected(telegram):
                self._raise_if_final()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with anyio.move_on_after(min(remaining, 0.05)):
                    await self._state_changed.wait()
            return True
        finally:
            self._waiting_for_sender -= 1

    def _on_login(self) -> None:
        self._authorized = True
        self._was_authorized = True
        # Health follows a login made through client.telegram (it was "not logged in").
        self._detail = self._detail.removesuffix(_NOT_LOGGED_IN)
        if self._session is not None:
            self._session.mark_authorized()
            # Telethon fetches the new account's update state right after the login.
            self._session.release_update_state()
            self._session.save()

    async def _on_raw_update(self, update: Any) -> None:
        self._last_update_at = time.time()

    # Keepalive hooks (see _keepalive.py) ----------------------------------------------------

    def _record_pong(self, rtt: float) -> None:
        self._last_pong_at = time.time()
        self._rtt = rtt
        self._notify(lambda listener: listener.on_pong(rtt))

    # Internal listeners (status publisher, metrics) ------------------------------------------

    def _add_listener(self, listener: ClientListener) -> None:
        self._listeners.append(listener)

    def _notify(self, call: Callable[[ClientListener], None]) -> None:
        for listener in self._listeners:
            try:
                call(listener)
            except Exception:
                log.exception("internal listener %r failed; ignored", listener)

    def _notify_save(self, duration: float, error: BaseException | None) -> None:
        if error is not None:
            self._last_error = self._save_problem(error)
        self._notify(lambda listener: listener.on_save(duration, error))

    def _save_problem(self, error: BaseException) -> str:
        where = self._store.describe()
        return f"cannot save the session to {where}: {store_error_text(where, error)}"


def _is_authorization(result: Any) -> bool:
    """A login's answer: auth.authorization, directly or inside a QR login's success."""
    if isinstance(result, auth_types.LoginTokenSuccess):
        result = result.authorization
    return isinstance(result, auth_types.Authorization)


class _NoState:
    """Stands in for updates.State when the session is not logged in."""

    pts = 0


def _classify(error: BaseException | None) -> StateReason:
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


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, (LinkAborted, PeerProtocolError)):
        return str(error)  # our own wording, complete; the class name adds nothing
    text = str(error)
    name = rpc_name(error)
    if name is not None and name not in text:
        return f"{name}: {text}"  # Telethon's text does not name the server's error
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _request_name(request: Any) -> str:
    if isinstance(request, (list, tuple)):
        return f"{len(request)} requests"
    return type(request).__name__


def _rpc_context(error: BaseException) -> BaseException | None:
    """The RPC error a cancellation interrupted the handling of: Telethon pauses 2 s after
    a 500 inside its own call, and our timeout may land in that pause."""
    context = error.__context__
    return context if isinstance(context, errors.RPCError) else None


def _rpc_name(error: BaseException) -> str:
    message = getattr(error, "message", None)
    return str(message) if message else type(error).__name__


def _address(conn: Any) -> str:
    ip = getattr(conn, "_ip", "?")
    port = getattr(conn, "_port", "?")
    return f"{ip}:{port}"


def _dc(telegram: Any) -> Any:
    session = getattr(telegram, "session", None)
    return getattr(session, "dc_id", "?")
