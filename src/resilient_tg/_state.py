"""What state a ResilientClient is in, why it got there, and a truthful health snapshot."""

from __future__ import annotations

import enum
import math
import time
from typing import Any

import attrs

__all__ = ["ConnectionState", "Health", "LeaseInfo", "StateChange", "StateReason", "StoreInfo"]


class ConnectionState(str, enum.Enum):
    """The client's lifecycle.

    IDLE -> WAITING_LEASE -> CONNECTING -> CATCHING_UP -> CONNECTED -> RECONNECTING ->
    CONNECTING ... -> CLOSED, plus the terminal AUTH_LOST (the key is dead), REJECTED (the
    server refuses the app's api_id/api_hash; the key is fine) and GAVE_UP.
    """

    IDLE = "idle"
    WAITING_LEASE = "waiting_lease"
    CONNECTING = "connecting"
    CATCHING_UP = "catching_up"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    AUTH_LOST = "auth_lost"
    REJECTED = "rejected"
    GAVE_UP = "gave_up"

    @property
    def terminal(self) -> bool:
        return self in (
            ConnectionState.CLOSED,
            ConnectionState.AUTH_LOST,
            ConnectionState.REJECTED,
            ConnectionState.GAVE_UP,
        )

    @property
    def link_up(self) -> bool:
        return self in (ConnectionState.CATCHING_UP, ConnectionState.CONNECTED)


class StateReason(str, enum.Enum):
    """Why a transition happened (a fixed set, for metrics and alerting)."""

    START = "start"
    LEASE = "lease"
    CONNECTED = "connected"
    CAUGHT_UP = "caught_up"
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    CONNECT_TIMEOUT = "connect_timeout"
    RESET = "reset"
    REFUSED = "refused"
    EOF = "eof"
    TRANSPORT_ERROR = "transport_error"
    SERVER_ERROR = "server_error"
    FLOOD_WAIT = "flood_wait"
    # The server moved the session to another DC (PHONE_/USER_/NETWORK_MIGRATE_X at
    # login): the link to the old DC is closed and the new DC is dialled.
    DC_MIGRATE = "dc_migrate"
    AUTH_ERROR = "auth_error"
    APP_REJECTED = "app_rejected"
    GAVE_UP = "gave_up"
    USER = "user"


@attrs.frozen
class StateChange:
    """One transition, passed to every callback. ``detail`` is free text without secrets."""

    old: ConnectionState
    new: ConnectionState
    reason: StateReason
    detail: str = ""
    attempt: int = 0
    next_delay: float | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    at: float = attrs.field(factory=time.time)


@attrs.frozen
class LeaseInfo:
    """Who holds the session's lease and until when (wall clock)."""

    holder: str
    expires_at: float
    ours: bool


@attrs.frozen
class StoreInfo:
    """The session store and how its last writes went."""

    kind: str
    location: str
    last_save_at: float | None = None
    last_save_error: str | None = None
    save_failures: int = 0


@attrs.frozen
class Health:
    """A cheap snapshot for health endpoints; building it never does I/O.

    ``healthy`` is True only when the link is CONNECTED, the session is authorized and
    a pong arrived within the keepalive's interval + timeout: a gateway that answers
    "healthy" must have a live MTProto link behind it.
    """

    state: ConnectionState
    connected: bool
    authorized: bool | None
    healthy: bool
    since: float
    last_pong_at: float | None
    last_update_at: float | None
    last_request_ok_at: float | None
    rtt: float | None
    clock_skew: float | None
    attempt: int
    reconnects_total: int
    last_error: str | None
    lease: LeaseInfo | None
    store: StoreInfo | None
    reason: StateReason | None = None
    detail: str = ""
    # What keeps the status endpoint or status file from working (None when they work,
    # or when none is configured); the link's own health does not depend on it.
    status_error: str | None = None
    # The home DC the main link serves (None before the session is loaded); it follows
    # a DC switch (login on an account homed elsewhere). Exported senders to other DCs
    # (downloads) never change it.
    dc_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (times as Unix seconds, enums as strings)."""

        def clean(value: Any) -> Any:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return {k: clean(v) for k, v in attrs.asdict(self, recurse=True).items()}
