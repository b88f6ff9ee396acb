"""The health tracker: what the client knows about its link's health, and the Health
snapshot built from it (never any I/O)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from . import _compat
from ._state import ConnectionState, Health, LeaseInfo, StoreInfo
from .stores._messages import store_error_text

if TYPE_CHECKING:
    from ._lease import LeaseKeeper
    from ._policy import KeepalivePolicy
    from ._state import StateReason
    from .stores import SessionStore, StoreSession

__all__ = ["HealthSource", "HealthTracker", "build_health"]


class HealthTracker:
    """The facts behind `Health` that no other part owns: written by the parts that learn
    them (the request gate, the post-connect, the keepalive, the supervisor), read by
    `build_health`. One per client; plain slots, so it costs a few hundred bytes."""

    __slots__ = (
        "authorized",
        "last_error",
        "last_pong_at",
        "last_request_ok_at",
        "last_update_at",
        "reconnects_total",
        "rejected_reason",
        "rtt",
        "was_authorized",
    )

    def __init__(self) -> None:
        #: Whether the session is logged in (None: not known yet on this run).
        self.authorized: bool | None = None
        #: Whether the stored session was ever logged in (a -404 then means AUTH_LOST).
        self.was_authorized = False
        self.last_pong_at: float | None = None
        self.last_update_at: float | None = None
        self.last_request_ok_at: float | None = None
        self.rtt: float | None = None
        self.reconnects_total = 0
        self.last_error: str | None = None
        #: The error name the server refused the app with (REJECTED).
        self.rejected_reason = ""

    def pong(self, rtt: float) -> None:
        """A keepalive pong arrived after ``rtt`` seconds."""
        self.last_pong_at = time.time()
        self.rtt = rtt


class _Attempts(Protocol):
    @property
    def attempt(self) -> int: ...


class _Publisher(Protocol):
    @property
    def error(self) -> str | None: ...


class HealthSource(Protocol):
    """What `build_health` reads of the client (`ResilientClient`); reading only."""

    @property
    def keepalive_policy(self) -> KeepalivePolicy: ...
    @property
    def _health(self) -> HealthTracker: ...
    @property
    def _state(self) -> ConnectionState: ...
    @property
    def _since(self) -> float: ...
    @property
    def _reason(self) -> StateReason | None: ...
    @property
    def _detail(self) -> str: ...
    @property
    def _store(self) -> SessionStore: ...
    @property
    def _session(self) -> StoreSession | None: ...
    @property
    def _leases(self) -> LeaseKeeper: ...
    @property
    def _telegram(self) -> Any: ...
    @property
    def _link(self) -> _Attempts: ...
    @property
    def _status(self) -> _Publisher | None: ...


def build_health(client: HealthSource) -> Health:
    """A snapshot of the link, the session and the lease (see `ResilientClient.health`)."""
    now = time.time()
    bound = client.keepalive_policy.detection_bound
    known = client._health
    last_pong_at = known.last_pong_at
    pong_fresh = last_pong_at is not None and now - last_pong_at <= bound
    session = client._session
    store = client._store
    store_info = StoreInfo(
        kind=type(store).__name__,
        location=store.describe(),
        last_save_at=(
            now - (time.monotonic() - session.last_saved_at)
            if session is not None and session.last_saved_at is not None
            else None
        ),
        last_save_error=(
            store_error_text(store.describe(), session.last_save_error)
            if session is not None and session.last_save_error is not None
            else None
        ),
        save_failures=session.save_failures if session is not None else 0,
    )
    lease: LeaseInfo | None = None
    ours = client._leases.lease
    if ours is not None:
        lease = LeaseInfo(holder=ours.holder, expires_at=ours.expires_at, ours=True)
    elif client._leases.foreign is not None:
        lease = client._leases.foreign
    state = client._state
    telegram = client._telegram
    status = client._status
    return Health(
        state=state,
        connected=state.link_up,
        authorized=known.authorized,
        healthy=state is ConnectionState.CONNECTED and known.authorized is True and pong_fresh,
        since=client._since,
        last_pong_at=last_pong_at,
        last_update_at=known.last_update_at,
        last_request_ok_at=known.last_request_ok_at,
        rtt=known.rtt,
        clock_skew=_compat.clock_offset(telegram) if telegram is not None else None,
        attempt=client._link.attempt,
        reconnects_total=known.reconnects_total,
        last_error=known.last_error,
        lease=lease,
        store=store_info,
        reason=client._reason,
        detail=client._detail,
        status_error=status.error if status is not None else None,
        dc_id=(session.dc_id or None) if session is not None else None,
    )
