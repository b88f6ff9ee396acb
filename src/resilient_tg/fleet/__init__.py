"""Fleets: many Telegram accounts over many worker processes, claimed through leases in
one SQL database (PostgreSQL, MariaDB/MySQL; SQLite for one host).

See docs/fleets.md. Every worker runs a `Fleet`; each claims a fair share of the
database's active sessions, survivors claim a dead worker's sessions once their leases
expire, newcomers receive sessions gradually, and SIGTERM drains.
"""

from __future__ import annotations

from ._accounts import AccountSettings, AccountStatus
from ._events import FleetEvent
from ._fleet import LEASE_MARGIN, Fleet, FleetError
from ._health import FleetHealth

__all__ = [
    "LEASE_MARGIN",
    "AccountSettings",
    "AccountStatus",
    "Fleet",
    "FleetError",
    "FleetEvent",
    "FleetHealth",
]
