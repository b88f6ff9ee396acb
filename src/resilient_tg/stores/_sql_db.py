"""One SQL database as SQLStore sees it: an engine made on first use, the schema checked
and created once, and every operation one short transaction retried while the database
cannot be reached.

Shared by every `SQLStore` of one database that was made with `SQLStore.session`, and
by a fleet (`resilient_tg.fleet`), so that a process running hundreds of sessions holds
one connection pool, not one per session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import attrs
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._sql_engine import brief, make_engine, prepare_sqlite_file, transient
from ._sql_schema import Tables, create_schema
from ._sql_url import Target

__all__ = ["DB_NOW", "RenewedLease", "SQLDatabase"]

log = logging.getLogger("resilient_tg.stores")

_T = TypeVar("_T")

#: The database's clock as float seconds since the epoch (leases compare against it).
DB_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
    "mariadb": "UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


@attrs.frozen
class RenewedLease:
    """One lease of a batch renewal: who, which term, until when (wall clock), and when
    (``time.monotonic()``) the batch ran."""

    holder: str
    token: int
    expires_at: float
    at: float


class SQLDatabase:
    """The engine and schema of one database URL and ``table_prefix``; see the module."""

    def __init__(
        self,
        target: Target,
        tables: Tables,
        *,
        retry: Sequence[float],
        timeout: float,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        self.target = target
        self.backend = target.backend
        self.tables = tables
        self.retry = tuple(retry)
        self.timeout = timeout
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        #: The URL without password or query (no session name): for messages.
        self.display = target.display.rsplit("#", 1)[0]
        self.engine: AsyncEngine | None = None
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._schema_ready = False
        self._setup_lock: asyncio.Lock | None = None
        #: Leases renewed together by `SQLStore.renew_leases`: name -> the renewal, which
        #: a store's own `renew_lease` reuses while it is fresh (no query of its own).
        self.renewed: dict[str, RenewedLease] = {}

    def tables_added(self) -> None:
        """Tables were added to ``self.tables.meta``: create them before the next operation
        (creation is checkfirst, so existing tables are left as they are)."""
        self._schema_ready = False

    async def run(
        self,
        what: str,
        op: Callable[[AsyncConnection], Awaitable[_T]],
        *,
        display: str,
        single: bool = False,
    ) -> _T:
        """Run ``op`` in one transaction; retry it while the database is unreachable, then
        raise ConnectionError naming ``display`` and ``what`` could not be done. With
        ``single`` (``op`` runs one statement), PostgreSQL runs it in autocommit: no BEGIN
        and COMMIT round trips (one statement is its own transaction; asyncpg's autocommit
        is a flag, while MariaDB's drivers would pay a round trip to set and one to reset
        it, and SQLite's BEGIN IMMEDIATE must stay), so the others keep the transaction."""
        attempt = 0
        while True:
            attempt += 1
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
                # arrives as the operation completes.
                with anyio.fail_after(self.timeout):
                    return await self._attempt(op, single and self.backend == "postgresql")
            except Exception as exc:
                if not transient(exc):
                    raise
                if attempt > len(self.retry):
                    raise ConnectionError(
                        f"{display}: could not {what} after {attempt} attempt(s): {brief(exc)}"
                    ) from exc
                delay = self.retry[attempt - 1]
                log.warning(
                    "%s: could not %s (%s); retrying in %.2fs (attempt %d of %d)",
                    display,
                    what,
                    brief(exc),
                    delay,
                    attempt,
                    len(self.retry) + 1,
                )
                await asyncio.sleep(delay)

    async def _attempt(
        self, op: Callable[[AsyncConnection], Awaitable[_T]], autocommit: bool = False
    ) -> _T:
        engine = await self.ready()
        if autocommit:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await op(conn)
        async with engine.begin() as conn:
            return await op(conn)

    async def ready(self) -> AsyncEngine:
        """The engine, created on first use, with the schema checked and created."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        if engine is not None and self._engine_loop is not loop:
            # Used from another event loop (e.g. a second asyncio.run()): the pooled
            # connections belong to the old loop, so drop them unclosed and start over.
            self.engine, self._setup_lock = None, None
            await engine.dispose(close=False)
        elif engine is not None and self._schema_ready:
            return engine
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self.engine is None:
                if self.backend == "sqlite":
                    await asyncio.to_thread(prepare_sqlite_file, self.target.url.database)
                self.engine = make_engine(
                    self.target,
                    self.timeout,
                    pool_size=self.pool_size,
                    max_overflow=self.max_overflow,
                )
                self._engine_loop = loop
            if not self._schema_ready:
                await create_schema(
                    self.engine,
                    self.tables,
                    backend=self.backend,
                    timeout=self.timeout,
                    display=self.target.display,
                )
                self._schema_ready = True
            return self.engine

    async def aclose(self) -> None:
        """Dispose the connection pool; the next operation makes a new one."""
        engine, self.engine = self.engine, None
        self._setup_lock = None
        if engine is not None:
            await engine.dispose()

    @staticmethod
    def dialect(conn: AsyncConnection) -> str:
        return conn.dialect.name

    @staticmethod
    def now_sql(conn: AsyncConnection) -> sa.ColumnClause[float]:
        """The database's clock (epoch seconds) as an SQL expression."""
        return sa.literal_column(DB_NOW[conn.dialect.name], sa.Double)

    @staticmethod
    async def now(conn: AsyncConnection) -> float:
        """The database's clock, read in the transaction of ``conn``."""
        value = await conn.scalar(sa.text(f"SELECT {DB_NOW[conn.dialect.name]}"))
        return float(value)
