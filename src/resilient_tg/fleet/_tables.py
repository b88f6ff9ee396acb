"""The fleet's two tables, beside SQLStore's (same database, same ``table_prefix``)::

    <prefix>fleet_workers   worker_id PK, host, pid, started_at, heartbeat_at,
                            capacity, running, draining
    <prefix>fleet_accounts  name PK, status, reason, settings, handover_at, updated_at

A worker row is its heartbeat: ``heartbeat_at`` is the database's clock at its last
claim round, so every worker sees the same set of live workers whatever its own clock
says. An account row holds the status only ``active`` rows are claimed in, the reason
for any other, per-account settings (sealed when the fleet has an encryption key), and
``handover_at`` while a rebalance moves the session. A session row with no account row
is active with the fleet's settings, so sessions imported by other means run too.
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql

from ..stores._sql_schema import Tables
from ..stores._sql_url import MAX_TEXT

__all__ = ["MAX_REASON", "FleetTables", "add_fleet_tables"]

#: Reasons are shortened to this many characters.
MAX_REASON = 1000


@attrs.frozen
class FleetTables:
    """SQLStore's tables of one prefix, and the fleet's."""

    store: Tables
    workers: sa.Table
    accounts: sa.Table

    @property
    def sessions(self) -> sa.Table:
        return self.store.sessions

    @property
    def leases(self) -> sa.Table:
        return self.store.leases


def add_fleet_tables(tables: Tables) -> FleetTables:
    """Add the fleet's tables to the metadata of SQLStore's (created with them)."""
    prefix, meta = tables.prefix, tables.meta
    workers = meta.tables.get(f"{prefix}fleet_workers")
    if workers is None:
        workers = sa.Table(
            f"{prefix}fleet_workers",
            meta,
            sa.Column("worker_id", sa.String(MAX_TEXT), primary_key=True),
            sa.Column("host", sa.String(MAX_TEXT), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("started_at", sa.Double, nullable=False),
            sa.Column("heartbeat_at", sa.Double, nullable=False),
            sa.Column("capacity", sa.Integer, nullable=True),
            sa.Column("running", sa.Integer, nullable=False),
            sa.Column("draining", sa.Integer, nullable=False),
        )
    accounts = meta.tables.get(f"{prefix}fleet_accounts")
    if accounts is None:
        accounts = sa.Table(
            f"{prefix}fleet_accounts",
            meta,
            sa.Column("name", sa.String(MAX_TEXT), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(MAX_REASON), nullable=False),
            sa.Column(
                "settings",
                sa.LargeBinary().with_variant(sa_mysql.BLOB(), "mysql", "mariadb"),
                nullable=True,
            ),
            sa.Column("handover_at", sa.Double, nullable=True),
            sa.Column("updated_at", sa.Double, nullable=False),
        )
    return FleetTables(store=tables, workers=workers, accounts=accounts)
