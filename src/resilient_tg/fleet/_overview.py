"""What an operator sees of a fleet: its accounts, its live workers, and how far each
worker is from its fair share. Snapshots read by `FleetAdmin`; frozen, no secrets.
"""

from __future__ import annotations

import attrs

from ._accounts import AccountStatus

__all__ = ["AccountInfo", "Balance", "WorkerInfo", "WorkerShare"]


@attrs.frozen
class AccountInfo:
    """An account as the fleet's database shows it now."""

    name: str
    status: AccountStatus
    reason: str
    holder: str  # the worker holding its lease; "" when nobody does
    lease_left: float  # seconds until that lease expires (0.0 when nobody holds it)
    in_handover: bool  # a rebalance is moving it to another worker
    has_session: bool  # False while a login has not saved one yet


@attrs.frozen
class WorkerInfo:
    """A live worker, from its heartbeat row."""

    worker_id: str
    host: str
    pid: int
    running: int
    capacity: int | None
    draining: bool
    heartbeat_age: float  # seconds since its last heartbeat, on the database's clock


@attrs.frozen
class WorkerShare:
    """A live worker's running count against its fair share."""

    worker_id: str
    running: int
    target: int
    draining: bool

    @property
    def off_by(self) -> int:
        """Sessions above (positive) or below (negative) its share."""
        return self.running - self.target


@attrs.frozen
class Balance:
    """How far the fleet is from every live worker running its fair share."""

    workers: tuple[WorkerShare, ...]
    active: int  # active accounts with a session: what the workers share
    unclaimed: int  # of those, held by no live lease
    in_handover: int  # being moved by a rebalance now

    @property
    def moves(self) -> int:
        """Sessions that still have to leave a worker above its share."""
        return sum(max(0, w.off_by) for w in self.workers)

    @property
    def balanced(self) -> bool:
        """Every live worker within one session of its share (and, when there are active
        accounts, at least one live worker to run them)."""
        if self.active and not any(not w.draining for w in self.workers):
            return False
        return all(abs(w.off_by) <= 1 for w in self.workers)
