"""The client's Health snapshot, built from what it already knows (never any I/O)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import _compat
from ._state import ConnectionState, Health, LeaseInfo, StoreInfo
from .stores._messages import store_error_text

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["build_health"]


def build_health(client: ResilientClient) -> Health:
    """A snapshot of the link, the session and the lease (see `ResilientClient.health`)."""
    now = time.time()
    bound = client.keepalive_policy.detection_bound
    last_pong_at = client._last_pong_at
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
        authorized=client._authorized,
        healthy=state is ConnectionState.CONNECTED and client._authorized is True and pong_fresh,
        since=client._since,
        last_pong_at=last_pong_at,
        last_update_at=client._last_update_at,
        last_request_ok_at=client._last_request_ok_at,
        rtt=client._rtt,
        clock_skew=_compat.clock_offset(telegram) if telegram is not None else None,
        attempt=client._link.attempt,
        reconnects_total=client._reconnects_total,
        last_error=client._last_error,
        lease=lease,
        store=store_info,
        reason=client._reason,
        detail=client._detail,
        status_error=status.error if status is not None else None,
        dc_id=(session.dc_id or None) if session is not None else None,
    )
