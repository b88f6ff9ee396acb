"""Fleets: many Telegram accounts over many worker processes, claimed through leases in
one SQL database (PostgreSQL, MariaDB/MySQL; SQLite for one host).

See docs/fleets.md. Every worker runs a `Fleet`; each claims a fair share of the
database's active sessions, survivors claim a dead worker's sessions once their leases
expire, newcomers receive sessions gradually, and SIGTERM drains. `FleetAdmin` is the
operators' side: accounts, workers, balance (also ``resilient-tg fleet``).
"""

from __future__ import annotations

from ._accounts import AccountSettings, AccountStatus
from ._admin import (
    AccountExistsError,
    AccountInfo,
    Balance,
    FleetAdmin,
    UnknownAccountError,
    WorkerInfo,
    WorkerShare,
)
from ._events import FleetEvent
from ._fleet import Fleet, FleetError
from ._health import FleetHealth

__all__ = [
    "AccountExistsError",
    "AccountInfo",
    "AccountSettings",
    "AccountStatus",
    "Balance",
    "Fleet",
    "FleetAdmin",
    "FleetError",
    "FleetEvent",
    "FleetHealth",
    "UnknownAccountError",
    "WorkerInfo",
    "WorkerShare",
]
