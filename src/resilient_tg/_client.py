"""ResilientClient: a Telethon client that never stays down while recovery is possible.

It owns its background tasks (connect cycles, post-connect, callback dispatch) through a
`TaskSet` and ends them when it is left; its timers (keepalive, lease renewal, flushing,
reconnect delays) are entries in the process's scheduler (`._scheduler`). This module is
the composition: the state machine (`_transition`), entering, and the public API. The
parts, each in a module of its own:

- `._supervisor` (over `._link`): the LinkSupervisor the ``connection=`` class reports
  to; paces each attempt by the ReconnectPolicy, runs the connect cycles, decides
  AUTH_LOST/REJECTED;
- `._postconnect` and `._gaps`: after a link comes up, probe authorization and fetch what
  was missed (CATCHING_UP) before CONNECTED;
- `._requests`: the request gate every ``client.telegram`` request passes;
- `._lease` (the lease keeper) and `._upkeep`: lease renewal and loss, update-state
  flushing;
- `._keepalive` and `._health` (the health tracker): liveness pings and the Health
  snapshot;
- `._shutdown`: leaving, bounded by shutdown_timeout;
- `._arguments`: the constructor's argument checks.

The parts see the client through `._core.ClientCore` (and the link through
`._core.LinkView`), the health snapshot through `._health.HealthSource`, the status
publisher through `._status.Reporter`: none imports this module.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from . import _compat
from ._arguments import check_arguments
from ._callbacks import Callback, CallbackRegistry, GapCallback
from ._deadlines import Deadlines
from ._errors import AppRejectedError, AuthLostError, NotConnectedError
from ._flag import Flag
from ._health import HealthTracker, build_health
from ._keepalive import Keepalive
from ._kinds import describe
from ._lease import LeaseKeeper
from ._policy import KeepalivePolicy, ReconnectPolicy
from ._requests import GatedTelegram, build_telegram
from ._shutdown import shut_down
from ._signals import wait_for_stop_signal
from ._state import ConnectionState, Health, StateChange, StateReason
from ._status import StatusPublisher
from ._supervisor import LinkSupervisor
from ._tasks import TaskSet
from ._upkeep import Upkeep, on_lease_lost, on_lease_waiting
from .stores import SessionStore, StoreSession, default_holder, open_store
from .stores._messages import store_error_text

if TYPE_CHECKING:
    from .cache import MessageCache

__all__ = ["ClientListener", "ResilientClient"]

log = logging.getLogger("resilient_tg.client")

C = TypeVar("C", bound=Callback)
G = TypeVar("G", bound=GapCallback)
H = TypeVar("H", bound=Callable[..., Any])

# The reconnect jitter's default source, shared: a Random() per client would cost 2.5 KB
# each, and jitter needs no per-client stream (pass rng= for a seeded one).
_RNG = random.Random()


class ClientListener(Protocol):
    """Internal observer (status publisher, metrics): called inline, must be quick and
    must not raise (a failure is logged and ignored)."""

    def on_transition(self, change: StateChange) -> None: ...
    def on_pong(self, rtt: float) -> None: ...
    def on_save(self, duration: float, error: BaseException | None) -> None: ...


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

    # Slots: a process may hold thousands of clients, and a dict of ~40 attributes is
    # the largest single allocation of one (a subclass of yours still gets a __dict__).
    __slots__ = (
        "__weakref__",
        "_api_hash",
        "_api_id",
        "_callbacks",
        "_carrying",
        "_closing",
        "_connection_base",
        "_deadlines",
        "_detail",
        "_early_handlers",
        "_entered",
        "_exported_borrows",
        "_generation",
        "_health",
        "_keepalive",
        "_leases",
        "_link",
        "_listeners",
        "_reason",
        "_rng",
        "_session",
        "_since",
        "_state",
        "_state_changed",
        "_status",
        "_store",
        "_tasks",
        "_telegram",
        "_telethon_kwargs",
        "_upkeep",
        "_waiting_for_sender",
        "cache",
        "flood_sleep_threshold",
        "flush_interval",
        "holder",
        "keepalive_policy",
        "lease_ttl",
        "max_queued_requests",
        "reconnect_policy",
        "request_timeout",
        "shutdown_timeout",
    )

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
        check_arguments(
            api_id,
            api_hash,
            telethon_kwargs,
            request_timeout=request_timeout,
            shutdown_timeout=shutdown_timeout,
            max_queued_requests=max_queued_requests,
            lease_ttl=lease_ttl,
            flush_interval=flush_interval,
            flood_sleep_threshold=flood_sleep_threshold,
        )
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
        self._telegram: GatedTelegram | None = None
        self._session: StoreSession | None = None
        self._tasks = TaskSet()
        self._deadlines = Deadlines()
        self._waiting_for_sender = 0  # requests waiting for the sender (queue bound)
        self._exported_borrows: set[anyio.CancelScope] | None = None  # see _exported.py
        self._closing = False
        self._entered = False
        #: The client's `resilient_tg.cache.MessageCache`, set by creating one for it
        #: (before entering); None without one.
        self.cache: MessageCache | None = None

        # The link: shared by the supervisor (which advances them), the keepalive and the
        # request gate. A new generation for every link that goes down.
        self._generation = 0
        # Set while the current link carries requests (the keepalive pings then).
        self._carrying = Flag()
        self._link = LinkSupervisor(self)
        # Lease (see _lease.py; what a loss does is in _upkeep.py).
        self._leases = LeaseKeeper(
            self._store,
            self.holder,
            self.lease_ttl,
            on_waiting=self._on_lease_waiting,  # bound methods: smaller than partials
            on_lost=self._on_lease_lost,
        )
        # Timers: entries in the process's scheduler (see _scheduler.py), no tasks. No
        # ping goes out once the lease is past its time (LeaseKeeper.check).
        self._keepalive = Keepalive(
            self.keepalive_policy, self._record_pong, self._link.silent, self._leases.check
        )
        self._upkeep = Upkeep(self)
        self._health = HealthTracker()

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

    def on_gap(self, callback: G) -> G:
        """Call ``callback(Gap)`` after messages of a gap the server would not replay were
        fetched and handed to the handlers (see `Gap`; also a decorator)."""
        return self._callbacks.add("gap", callback)

    def health(self) -> Health:
        """A snapshot of the link, the session and the lease; never does I/O."""
        return build_health(self)

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
        return await wait_for_stop_signal(log, "shutting down")

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
            self._health.was_authorized = self._session.ever_authorized
            # Until it has caught up on a link, the client writes back the update state it
            # loaded: a client that never connected knows no newer one.
            self._session.hold_update_state()
            self._telegram = build_telegram(self, self._session)
            _compat.watch_dispatch(self._telegram)
            self._session.update_state_gate = partial(_compat.handlers_idle, self._telegram)
            self._session.box_update_states = partial(_compat.box_update_states, self._telegram)
            if self.cache is not None:
                await self.cache._start()
            self._link.start()
            self._upkeep.start()
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
        await shut_down(self)

    async def _guarded(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a background task; a bug in it is logged, never fatal for the host."""
        try:
            await fn(*args)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            self._health.last_error = describe(exc)
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
        level: int = logging.INFO,
    ) -> None:
        old = self._state
        if old.terminal and new is not old and old is not ConnectionState.CLOSED:
            return  # AUTH_LOST, REJECTED and GAVE_UP are final (only leaving writes CLOSED)
        if old is ConnectionState.CLOSED:
            return
        if old.link_up and new in (ConnectionState.RECONNECTING, ConnectionState.CONNECTING):
            self._health.reconnects_total += 1
        self._state = new
        self._reason = reason
        self._detail = detail
        self._since = time.time()
        if error is not None:
            self._health.last_error = describe(error)
        change = StateChange(
            old=old,
            new=new,
            reason=reason,
            detail=detail,
            attempt=self._link.attempt,
            next_delay=next_delay,
            error=error,
        )
        log.log(level, "%s", message or f"{new.value}: {detail or reason.value}")
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

    def _rejected_error(self) -> AppRejectedError:
        name = self._health.rejected_reason
        return AppRejectedError(
            f"the server refuses this app's api_id/api_hash ({name}); fix the configuration",
            reason=name,
        )

    def _abort_link(self, reason: StateReason, detail: str, *, quiet: bool = False) -> None:
        """Close the current socket; Telethon then reconnects (paced by the policy)."""
        self._link.abort(reason, detail, quiet=quiet)

    def _on_lease_waiting(self, holder: str) -> None:
        on_lease_waiting(self, holder)

    def _on_lease_lost(self, why: str) -> None:
        on_lease_lost(self, why)

    async def _on_raw_update(self, update: Any) -> None:
        self._health.last_update_at = time.time()

    # Keepalive hooks (see _keepalive.py) ----------------------------------------------------

    def _record_pong(self, rtt: float) -> None:
        self._health.pong(rtt)
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
            self._health.last_error = self._save_problem(error)
        self._notify(lambda listener: listener.on_save(duration, error))

    def _save_problem(self, error: BaseException) -> str:
        where = self._store.describe()
        return f"cannot save the session to {where}: {store_error_text(where, error)}"
