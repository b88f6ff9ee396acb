"""The fleet's queries: heartbeats, the view of a claim round, handovers and statuses.

Every call is one short transaction through the `SQLDatabase` the fleet's sessions share
(one pool per worker). Times are the database's clock, so workers whose clocks disagree
still agree on who is alive and whose lease expired.
"""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_pg
from sqlalchemy.dialects import sqlite as sa_sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..stores import SQLStore
from ..stores._sql import shared_database
from ..stores._sql_db import SQLDatabase
from ._accounts import AccountStatus
from ._plan import WorkerLoad
from ._tables import MAX_REASON, FleetTables, add_fleet_tables

__all__ = ["AccountRow", "FleetDatabase", "FleetView", "WorkerRow", "fleet_database"]


def fleet_database(store: SQLStore) -> FleetDatabase:
    """The fleet's tables in the database of ``store`` (sharing its pool; the tables are
    created with SQLStore's on first use)."""
    database = shared_database(store)
    tables = add_fleet_tables(database.tables)
    database.tables_added()
    return FleetDatabase(database, tables)


@attrs.frozen
class WorkerRow:
    """A worker's heartbeat row."""

    worker_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_age: float  # seconds since its last heartbeat, on the database's clock
    capacity: int | None
    running: int
    draining: bool

    @property
    def load(self) -> WorkerLoad:
        return WorkerLoad(self.worker_id, self.capacity, self.running, self.draining)


@attrs.frozen
class AccountRow:
    """A session of the fleet's database, with its account row and lease."""

    name: str
    status: AccountStatus
    reason: str
    holder: str  # "" when the lease is free or expired
    lease_left: float  # seconds until the lease expires (<= 0: free)
    token: int
    in_handover: bool
    has_account_row: bool
    settings: bytes | None = None  # as stored (sealed when the fleet has a key)


@attrs.frozen
class FleetView:
    """What one claim round sees."""

    now: float
    workers: tuple[WorkerRow, ...]  # live ones
    accounts: tuple[AccountRow, ...]
    in_flight: int  # handovers marked and not yet claimed


class FleetDatabase:
    """The fleet's tables in one database; see the module docstring."""

    def __init__(self, database: SQLDatabase, tables: FleetTables) -> None:
        self.database = database
        self.tables = tables
        self.display = database.display

    async def _run(self, what: str, op: Any) -> Any:
        return await self.database.run(what, op, display=self.display)

    async def heartbeat(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        started_at: float,
        capacity: int | None,
        running: int,
        draining: bool,
    ) -> None:
        """Write this worker's heartbeat row (the database's clock)."""
        workers = self.tables.workers

        async def op(conn: AsyncConnection) -> None:
            now = SQLDatabase.now_sql(conn)
            values = {
                "worker_id": worker_id,
                "host": host,
                "pid": pid,
                "started_at": started_at,
                "heartbeat_at": now,
                "capacity": capacity,
                "running": running,
                "draining": int(draining),
            }
            changing = ("heartbeat_at", "capacity", "running", "draining")
            await conn.execute(_upsert(conn, workers, values, "worker_id", changing))

        await self._run("write the worker heartbeat", op)

    async def remove_worker(self, worker_id: str) -> None:
        workers = self.tables.workers

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(sa.delete(workers).where(workers.c.worker_id == worker_id))

        await self._run("remove the worker row", op)

    async def view(self, worker_ttl: float) -> FleetView:
        """Live workers, every session with its status and lease, handovers in flight."""
        t = self.tables

        async def op(conn: AsyncConnection) -> FleetView:
            now = await SQLDatabase.now(conn)
            workers = tuple(
                WorkerRow(
                    worker_id=str(r.worker_id),
                    host=str(r.host),
                    pid=int(r.pid),
                    started_at=float(r.started_at),
                    heartbeat_age=now - float(r.heartbeat_at),
                    capacity=None if r.capacity is None else int(r.capacity),
                    running=int(r.running),
                    draining=bool(r.draining),
                )
                for r in await conn.execute(
                    sa.select(t.workers).where(t.workers.c.heartbeat_at > now - worker_ttl)
                )
            )
            query = (
                sa.select(
                    t.sessions.c.name,
                    t.accounts.c.status,
                    t.accounts.c.reason,
                    t.accounts.c.handover_at,
                    t.accounts.c.settings,
                    t.leases.c.holder,
                    t.leases.c.expires_at,
                    t.leases.c.token,
                )
                .select_from(t.sessions)
                .outerjoin(t.accounts, t.accounts.c.name == t.sessions.c.name)
                .outerjoin(t.leases, t.leases.c.name == t.sessions.c.name)
            )
            stale = now - _handover_stale(worker_ttl)
            accounts = []
            in_flight = 0
            for r in await conn.execute(query):
                left = (float(r.expires_at) - now) if r.expires_at is not None else 0.0
                holder = str(r.holder or "") if left > 0 else ""
                handover = r.handover_at is not None and float(r.handover_at) > stale
                in_flight += handover
                accounts.append(
                    AccountRow(
                        name=str(r.name),
                        status=_status(r.status),
                        reason=str(r.reason or ""),
                        holder=holder,
                        lease_left=left,
                        token=int(r.token or 0),
                        in_handover=handover,
                        has_account_row=r.status is not None,
                        settings=None if r.settings is None else bytes(r.settings),
                    )
                )
            return FleetView(now, workers, tuple(accounts), in_flight)

        result: FleetView = await self._run("read the fleet", op)
        return result

    async def mark_handovers(
        self, worker_id: str, names: list[str], *, max_moving: int, worker_ttl: float
    ) -> list[str]:
        """Mark up to ``names`` for handover while fewer than ``max_moving`` are in
        flight fleet-wide; the workers' rows are locked, so two workers deciding at once
        cannot exceed the bound together. Returns the names marked."""
        t = self.tables

        async def op(conn: AsyncConnection) -> list[str]:
            # Serialise the decision: every worker's row, locked in a fixed order.
            await conn.execute(
                sa.select(t.workers.c.worker_id).order_by(t.workers.c.worker_id).with_for_update()
            )
            now = await SQLDatabase.now(conn)
            in_flight = int(
                await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(t.accounts)
                    .where(t.accounts.c.handover_at > now - _handover_stale(worker_ttl))
                )
                or 0
            )
            chosen = names[: max(0, max_moving - in_flight)]
            for name in chosen:
                values = {
                    "name": name,
                    "status": AccountStatus.ACTIVE.value,
                    "reason": f"handed over by {worker_id}"[:MAX_REASON],
                    "settings": None,
                    "handover_at": now,
                    "updated_at": now,
                }
                await conn.execute(
                    _upsert(conn, t.accounts, values, "name", ("handover_at", "updated_at"))
                )
            return chosen

        result: list[str] = await self._run("mark handovers", op)
        return result

    async def clear_handovers(self, names: list[str]) -> None:
        """The accounts arrived: their handovers are no longer in flight."""
        accounts = self.tables.accounts

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                sa.update(accounts)
                .where(accounts.c.name.in_(names), accounts.c.handover_at.is_not(None))
                .values(handover_at=None)
            )

        await self._run("clear handovers", op)

    async def set_status(self, name: str, status: AccountStatus, reason: str) -> None:
        """Set an account's status (the row is made if the session had none)."""
        accounts = self.tables.accounts

        async def op(conn: AsyncConnection) -> None:
            now = SQLDatabase.now_sql(conn)
            values = {
                "name": name,
                "status": status.value,
                "reason": reason[:MAX_REASON],
                "settings": None,
                "handover_at": None,
                "updated_at": now,
            }
            changing = ("status", "reason", "handover_at", "updated_at")
            await conn.execute(_upsert(conn, accounts, values, "name", changing))

        await self._run("set an account's status", op)

    async def exists(self, name: str) -> bool:
        """Whether the fleet still has ``name`` (its session row or its account row)."""
        t = self.tables

        async def op(conn: AsyncConnection) -> bool:
            for table in (t.sessions, t.accounts):
                if await conn.scalar(sa.select(table.c.name).where(table.c.name == name)):
                    return True
            return False

        found: bool = await self._run("check that an account exists", op)
        return found

    async def settings_blob(self, name: str) -> bytes | None:
        accounts = self.tables.accounts

        async def op(conn: AsyncConnection) -> bytes | None:
            value = await conn.scalar(sa.select(accounts.c.settings).where(accounts.c.name == name))
            return None if value is None else bytes(value)

        result: bytes | None = await self._run("read an account's settings", op)
        return result


def _handover_stale(worker_ttl: float) -> float:
    """A handover mark older than this is ignored: its worker died mid-way."""
    return 2 * worker_ttl


def _status(value: object) -> AccountStatus:
    if value is None:
        return AccountStatus.ACTIVE
    try:
        return AccountStatus(str(value))
    except ValueError:
        return AccountStatus.DISABLED  # written by a newer version: leave it alone


def _upsert(
    conn: AsyncConnection,
    table: sa.Table,
    values: dict[str, Any],
    key: str,
    changing: tuple[str, ...],
) -> Any:
    """INSERT ... ON CONFLICT/DUPLICATE KEY UPDATE ``changing`` columns."""
    if conn.dialect.name in ("mysql", "mariadb"):
        my = sa_mysql.insert(table).values(**values)
        return my.on_duplicate_key_update({c: my.inserted[c] for c in changing})
    ins = (sa_pg.insert if conn.dialect.name == "postgresql" else sa_sqlite.insert)(table)
    ins = ins.values(**values)
    return ins.on_conflict_do_update(
        index_elements=[key], set_={c: ins.excluded[c] for c in changing}
    )
