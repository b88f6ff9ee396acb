"""FleetHealth: a snapshot of one worker of a fleet, cheap and without I/O."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

__all__ = ["FleetHealth"]


@attrs.frozen
class FleetHealth:
    """What one worker knows: its accounts' states and its place in the fleet.

    ``healthy`` is true while the worker's claim rounds reach the database (the last
    one succeeded within three claim intervals) and it is not refusing to run (SQLite
    seen from several hosts). An account that is down is reported in ``accounts``, not
    as an unhealthy worker: another worker cannot do better with it.
    """

    worker_id: str
    host: str
    draining: bool
    healthy: bool
    live_workers: int
    target: int  # this worker's fair share at the last round
    total_accounts: int  # active accounts in the database at the last round
    accounts: dict[str, str]  # account name -> ConnectionState value (this worker's)
    last_round_age: float | None  # seconds since the last successful round
    rounds: int  # claim rounds completed since the worker started
    last_error: str | None
    refused: str | None

    @property
    def running(self) -> int:
        return len(self.accounts)

    @property
    def counts(self) -> dict[str, int]:
        """How many of this worker's accounts are in each state."""
        return dict(Counter(self.accounts.values()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: counts by state, per-account state, this worker's share."""
        return {
            "worker_id": self.worker_id,
            "host": self.host,
            "healthy": self.healthy,
            "draining": self.draining,
            "live_workers": self.live_workers,
            "total_accounts": self.total_accounts,
            "target": self.target,
            "running": self.running,
            "counts": self.counts,
            "accounts": dict(sorted(self.accounts.items())),
            "last_round_age": self.last_round_age,
            "rounds": self.rounds,
            "last_error": self.last_error,
            "refused": self.refused,
        }
