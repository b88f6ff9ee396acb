"""SQLStore: sessions in SQLite, PostgreSQL or MariaDB/MySQL through SQLAlchemy 2 async.

Three tables (names start with ``table_prefix``, default ``resilient_tg_``)::

    <prefix>schema    id=1, version          the schema version, checked on first use
    <prefix>sessions  name PK, data, updated_at    one row per named session
    <prefix>leases    name PK, holder, expires_at, token

They are made in `._sql_schema`; the URL is read in `._sql_url`, and the engine and
its transactions are in `._sql_db` (one `SQLDatabase`, shared by the stores made with
`SQLStore.session`).

Every write is one short transaction. A lease change locks its row (``SELECT ... FOR
UPDATE`` on PostgreSQL and MariaDB/MySQL; SQLite transactions are ``BEGIN IMMEDIATE``,
which serialises writers), and expiry is compared with the database's clock, so two
machines whose clocks disagree still agree on who holds a session. The fencing
token grows with every new holder; a save through a store that took the lease is
refused (LeaseLostError) once another holder has taken it over.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql as sa_mysql
    from sqlalchemy.dialects import postgresql as sa_pg
    from sqlalchemy.dialects import sqlite as sa_sqlite
    from sqlalchemy.ext.asyncio import AsyncConnection
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("SQLStore needs SQLAlchemy: pip install 'resilient-tg[sql]'") from exc

from .._errors import LeaseLostError, SessionCorruptError, SessionInUseError
from ._base import Lease, SessionStore, _check_lease_args
from ._data import SessionData, decode, encode
from ._encryption import Encryptor, is_sealed, resolve_key
from ._sql_batch import BATCH, claim_in, renew_in
from ._sql_db import RenewedLease, SQLDatabase
from ._sql_schema import SCHEMA_VERSION, make_tables
from ._sql_url import MAX_TEXT, check_name, read_options, target

__all__ = ["SCHEMA_VERSION", "SQLStore", "sealing_key", "shared_database"]

log = logging.getLogger("resilient_tg.stores")

_T = TypeVar("_T")


class SQLStore(SessionStore):
    """Sessions in a SQL database, many per database, each under a ``name``.

    ``url`` is ``sqlite:///path``, ``postgresql://user@host/db`` (or ``postgres://``),
    ``mysql://`` or ``mariadb://``; plain schemes get an async driver (aiosqlite,
    asyncpg, asyncmy) and an explicit ``scheme+driver://`` is used as given. Query
    parameters ``name``, ``table_prefix`` and ``key_env`` are read here; the rest go
    to the driver. Nothing connects until first use; `aclose` disposes the pool.

    ``retry`` is the delays (seconds) between attempts when the database cannot be
    reached; after the last one the operation raises ConnectionError (naming the
    store) and the caller keeps its state. ``timeout`` bounds each attempt (connecting
    included), so an operation gives up within ``(len(retry) + 1) * timeout + sum(retry)``.
    The pool keeps ``pool_size`` connections and opens up to ``max_overflow`` more at
    peaks (a process running many sessions, e.g. a fleet worker, wants more).
    """

    cross_process_lease = True

    def __init__(
        self,
        url: str,
        name: str | None = None,
        *,
        encryption_key: bytes | str | None = None,
        encryption_key_env: str | None = None,
        retry: Sequence[float] = (0.2, 0.5, 1.0),
        timeout: float = 5.0,
        table_prefix: str | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        options = read_options(
            url, name=name, table_prefix=table_prefix, key_env=encryption_key_env
        )
        name, table_prefix = options.name, options.table_prefix
        delays = tuple(float(d) for d in retry)
        if any(not (math.isfinite(d) and d >= 0) for d in delays):
            raise ValueError(f"SQLStore retry delays must be finite and >= 0, got {delays!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"SQLStore timeout must be > 0 seconds, got {timeout!r}")
        if pool_size < 1 or max_overflow < 0:
            raise ValueError(
                "SQLStore needs pool_size >= 1 and max_overflow >= 0, "
                f"got {pool_size} and {max_overflow}"
            )

        self._target = target(options)
        self._backend = self._target.backend
        self._display = self._target.display
        self.name = name
        self.table_prefix = table_prefix
        self._retry = delays
        self._timeout = float(timeout)

        key = resolve_key(encryption_key, options.key_env)
        self._key = key
        self._encryptor = session_encryptor(key, name)
        self._database = SQLDatabase(
            self._target,
            make_tables(table_prefix),
            retry=delays,
            timeout=self._timeout,
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        self._sessions = self._database.tables.sessions
        self._leases = self._database.tables.leases
        # (holder, token) of the lease taken through this store: saves are fenced by it.
        self._fence: tuple[str, int] | None = None
        # Whether aclose() disposes the pool: not for a store made by session().
        self._owns_database = True

    def session(self, name: str) -> SQLStore:
        """A store for the session ``name`` of the same database that shares this store's
        connection pool, options and encryption key: many sessions, one pool. Its
        `aclose` leaves the pool to this store."""
        check_name(name)
        twin = copy.copy(self)
        twin.name = name
        twin._target = attrs.evolve(self._target, display=f"{self._database.display}#{name}")
        twin._display = twin._target.display
        twin._encryptor = session_encryptor(self._key, name)
        twin._fence = None
        twin._owns_database = False
        return twin

    def describe(self) -> str:
        """The URL without password or query, then ``#name``."""
        return self._display

    # Sessions -------------------------------------------------------------------

    async def load(self) -> SessionData | None:
        table = self._sessions

        async def op(conn: AsyncConnection) -> bytes | None:
            result = await conn.execute(sa.select(table.c.data).where(table.c.name == self.name))
            value = result.scalar_one_or_none()
            return None if value is None else bytes(value)

        blob = await self._run("load", op)
        if blob is None:
            return None
        if self._encryptor is not None:
            blob = self._encryptor.open(blob, source=self._display)
        elif is_sealed(blob):
            raise SessionCorruptError(
                f"{self._display}: the stored session is encrypted; give encryption_key "
                "or encryption_key_env",
                store=self._display,
            )
        return decode(blob, source=self._display)

    async def save(self, data: SessionData) -> None:
        """Upsert the session in one transaction; refused if our lease was taken over."""
        if not isinstance(data, SessionData):
            raise TypeError(f"SQLStore.save() takes SessionData, got {type(data).__name__}")
        blob = encode(data)
        if self._encryptor is not None:
            blob = self._encryptor.seal(blob)
        table = self._sessions

        async def op(conn: AsyncConnection) -> None:
            await self._check_fence(conn, "save")
            now: sa.ColumnClause[Any] = SQLDatabase.now_sql(conn)
            if self._dialect(conn) in ("mysql", "mariadb"):
                my = sa_mysql.insert(table).values(name=self.name, data=blob, updated_at=now)
                stmt: Any = my.on_duplicate_key_update(
                    data=my.inserted.data, updated_at=my.inserted.updated_at
                )
            else:
                ins = (sa_pg.insert if self._backend == "postgresql" else sa_sqlite.insert)(table)
                ins = ins.values(name=self.name, data=blob, updated_at=now)
                stmt = ins.on_conflict_do_update(
                    index_elements=[table.c.name],
                    set_={"data": ins.excluded.data, "updated_at": ins.excluded.updated_at},
                )
            await conn.execute(stmt)

        await self._run("save", op)

    async def delete(self) -> None:
        """Remove the session row (the lease row stays, so fencing tokens keep growing)."""
        table = self._sessions

        async def op(conn: AsyncConnection) -> None:
            await self._check_fence(conn, "delete")
            await conn.execute(sa.delete(table).where(table.c.name == self.name))

        await self._run("delete", op)

    # Leases ---------------------------------------------------------------------

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        """Take the lease (SessionInUseError while another live holder has it). A lease
        this process claimed or renewed for ``holder`` with `claim_leases` or
        `renew_leases` less than ``ttl/3`` ago is taken from that batch, without a query."""
        _check_holder(holder, ttl)
        batch = self._database.renewed.get(self.name)
        if batch is not None and batch.holder == holder and time.monotonic() - batch.at < ttl / 3:
            self._fence = (holder, batch.token)
            return Lease(holder=holder, expires_at=batch.expires_at, token=batch.token)
        leases = self._leases

        async def op(conn: AsyncConnection) -> Lease:
            # Make sure the row exists, then lock it: every contender queues on that lock.
            await conn.execute(self._ensure_lease_row(conn))
            now = await self._db_now(conn)
            row = (
                await conn.execute(
                    sa.select(leases.c.holder, leases.c.expires_at, leases.c.token)
                    .where(leases.c.name == self.name)
                    .with_for_update()
                )
            ).one()
            current, expires_at, token = str(row[0]), float(row[1]), int(row[2])
            if current and current != holder and expires_at > now:
                raise SessionInUseError(
                    f"{self._display}: the session is leased to {current} "
                    f"for another {expires_at - now:.1f}s",
                    store=self._display,
                    holder=current,
                    expires_at=_local(expires_at, now),
                )
            if current != holder or expires_at <= now:
                token += 1  # a new holder (or a new term): older tokens are fenced off
            await conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name)
                .values(holder=holder, expires_at=now + ttl, token=token)
            )
            return Lease(holder=holder, expires_at=_local(now + ttl, now), token=token)

        lease = await self._run("acquire the lease", op)
        self._fence = (holder, lease.token)
        log.debug("%s: lease taken by %s (token %d)", self._display, holder, lease.token)
        return lease

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        """Extend our lease, even if it lapsed while nobody else took it. A renewal of this
        lease made by `renew_leases` less than ``ttl/3`` ago is reused without a query."""
        _check_holder(holder, ttl)
        batch = self._database.renewed.get(self.name)
        fence = self._fence
        if (
            batch is not None
            and batch.holder == holder
            and (fence is None or fence == (holder, batch.token))
            and time.monotonic() - batch.at < ttl / 3
        ):
            return Lease(holder=holder, expires_at=batch.expires_at, token=batch.token)
        leases = self._leases

        async def op(conn: AsyncConnection) -> Lease:
            now = await self._db_now(conn)
            row = (
                await conn.execute(
                    sa.select(leases.c.holder, leases.c.token)
                    .where(leases.c.name == self.name)
                    .with_for_update()
                )
            ).one_or_none()
            fence = self._fence
            if (
                row is None
                or row[0] != holder
                or (fence is not None and fence[0] == holder and int(row[1]) != fence[1])
            ):
                now_held = f" (now held by {row[0]})" if row is not None and row[0] else ""
                raise LeaseLostError(
                    f"{self._display}: our lease is gone{now_held}",
                    store=self._display,
                    holder=holder,
                )
            await conn.execute(
                sa.update(leases).where(leases.c.name == self.name).values(expires_at=now + ttl)
            )
            return Lease(holder=holder, expires_at=_local(now + ttl, now), token=int(row[1]))

        return await self._run("renew the lease", op)

    async def renew_leases(self, holder: str, names: Sequence[str], ttl: float) -> dict[str, Lease]:
        """Extend every lease of ``names`` that ``holder`` has, in one transaction, and
        return them by name (a name missing from the result is not ours any more).

        For a process holding many sessions of this database (a fleet): the stores made
        with `session` then answer their own `renew_lease` from this batch while it is
        fresh, so N sessions cost one renewal query per interval instead of N."""
        _check_holder(holder, ttl)
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}

        async def op(conn: AsyncConnection) -> dict[str, Lease]:
            return await renew_in(conn, self._leases, holder, wanted, ttl)

        renewed = await self._run("renew the leases", op)
        at = time.monotonic()
        cache = self._database.renewed
        for name in wanted:
            lease = renewed.get(name)
            if lease is None:
                cache.pop(name, None)
            else:
                cache[name] = RenewedLease(holder, lease.token, lease.expires_at, at)
        return renewed

    async def claim_leases(
        self, holder: str, names: Sequence[str], ttl: float, *, limit: int
    ) -> dict[str, Lease]:
        """Take the leases of up to ``limit`` of ``names`` that are free (never taken,
        released or expired) for ``holder``, in one transaction; each gets a new token.

        For a process claiming many sessions of this database (a fleet). Rows another
        transaction has locked are skipped, not waited for, so claimers running at once
        take different sessions. A store made with `session` for a claimed name then
        takes the lease with `acquire_lease` (same holder, same token) from this batch,
        without a query."""
        _check_holder(holder, ttl)
        wanted = list(dict.fromkeys(names))
        if not wanted or limit <= 0:
            return {}

        async def op(conn: AsyncConnection) -> dict[str, Lease]:
            for start in range(0, len(wanted), BATCH):  # bound parameters stay bounded
                await conn.execute(self._ensure_lease_rows(conn, wanted[start : start + BATCH]))
            return await claim_in(conn, self._leases, holder, wanted, ttl, limit)

        claimed = await self._run("claim leases", op)
        at = time.monotonic()
        for name, lease in claimed.items():
            self._database.renewed[name] = RenewedLease(holder, lease.token, lease.expires_at, at)
        return claimed

    async def release_lease(self, holder: str) -> None:
        """Free the lease if ``holder`` has it; the token is kept so it keeps growing."""
        leases = self._leases

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                sa.update(leases)
                .where(leases.c.name == self.name, leases.c.holder == holder)
                .values(holder="", expires_at=0.0)
            )

        await self._run("release the lease", op)
        self._database.renewed.pop(self.name, None)
        if self._fence is not None and self._fence[0] == holder:
            self._fence = None

    async def current_lease(self) -> Lease | None:
        leases = self._leases

        async def op(conn: AsyncConnection) -> Lease | None:
            now = await self._db_now(conn)
            row = (
                await conn.execute(
                    sa.select(leases.c.holder, leases.c.expires_at, leases.c.token).where(
                        leases.c.name == self.name
                    )
                )
            ).one_or_none()
            if row is None or not row[0] or float(row[1]) <= now:
                return None
            return Lease(
                holder=str(row[0]), expires_at=_local(float(row[1]), now), token=int(row[2])
            )

        return await self._run("read the lease", op)

    # Lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Dispose the connection pool (unless it is shared from the store this one was
        made from by `session`); the store reconnects if used again."""
        if self._owns_database:
            await self._database.aclose()

    # Internals ------------------------------------------------------------------

    async def _run(self, what: str, op: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run ``op`` in one transaction; retry it while the database is unreachable."""
        return await self._database.run(what, op, display=self._display)

    def _ensure_lease_rows(self, conn: AsyncConnection, names: Sequence[str]) -> Any:
        """An INSERT of free lease rows for ``names`` that skips the rows that exist."""
        values = [{"name": n, "holder": "", "expires_at": 0.0, "token": 0} for n in names]
        if self._dialect(conn) in ("mysql", "mariadb"):
            my = sa_mysql.insert(self._leases).values(values)
            return my.on_duplicate_key_update(name=my.inserted.name)
        ins = (sa_pg.insert if self._backend == "postgresql" else sa_sqlite.insert)(self._leases)
        return ins.values(values).on_conflict_do_nothing(index_elements=["name"])

    def _ensure_lease_row(self, conn: AsyncConnection) -> Any:
        """An INSERT of a free lease row that does nothing if the row exists."""
        values = {"name": self.name, "holder": "", "expires_at": 0.0, "token": 0}
        if self._dialect(conn) in ("mysql", "mariadb"):
            # Not INSERT IGNORE: its duplicate-key warning would reach Python's warnings.
            my = sa_mysql.insert(self._leases).values(**values)
            return my.on_duplicate_key_update(name=my.inserted.name)
        ins = (sa_pg.insert if self._backend == "postgresql" else sa_sqlite.insert)(self._leases)
        return ins.values(**values).on_conflict_do_nothing(index_elements=["name"])

    async def _check_fence(self, conn: AsyncConnection, what: str) -> None:
        """Refuse a write when the lease this store took now has another token."""
        fence = self._fence
        if fence is None:
            return
        leases = self._leases
        row = (
            await conn.execute(
                sa.select(leases.c.holder, leases.c.token)
                .where(leases.c.name == self.name)
                .with_for_update(read=True)  # a takeover waits until this write commits
            )
        ).one_or_none()
        if row is None or row[0] != fence[0] or int(row[1]) != fence[1]:
            now_held = f"; it is now held by {row[0]}" if row is not None and row[0] else ""
            raise LeaseLostError(
                f"{self._display}: {what} refused: our lease (token {fence[1]}) was lost{now_held}",
                store=self._display,
                holder=fence[0],
            )

    async def _db_now(self, conn: AsyncConnection) -> float:
        return await SQLDatabase.now(conn)

    @staticmethod
    def _dialect(conn: AsyncConnection) -> str:
        return conn.dialect.name


def _check_holder(holder: str, ttl: float) -> None:
    _check_lease_args(holder, ttl)
    if len(holder) > MAX_TEXT:
        raise ValueError(f"lease holder must be at most {MAX_TEXT} characters")


def session_encryptor(key: bytes | None, name: str) -> Encryptor | None:
    """What seals the session ``name`` of a store with ``key`` (None without a key)."""
    # The key is bound to the session name, not to the host: a database restored
    # on another server (or reached by another host name) still decrypts.
    return None if key is None else Encryptor(key, context=f"resilient_tg.SQLStore#{name}")


def _local(db_time: float, db_now: float) -> float:
    """A database timestamp on this machine's clock (time.time()), for Lease and errors."""
    return time.time() + (db_time - db_now)


def shared_database(store: SQLStore) -> SQLDatabase:
    """The database (pool, tables, batch-renewal cache) behind ``store`` and every store
    made from it with `SQLStore.session`: what a fleet builds its own tables on."""
    return store._database


def sealing_key(store: SQLStore) -> bytes | None:
    """The encryption key ``store`` seals with (None without one), for data of the same
    database that must be sealed alike (a fleet's per-account settings). Never logged."""
    return store._key
