"""SQLStore: sessions in SQLite, PostgreSQL or MariaDB/MySQL through SQLAlchemy 2 async.

Three tables (names start with ``table_prefix``, default ``resilient_tg_``)::

    <prefix>schema    id=1, version          the schema version, checked on first use
    <prefix>sessions  name PK, data, updated_at    one row per named session
    <prefix>leases    name PK, holder, expires_at, token

Every write is one short transaction. A lease change locks its row (``SELECT ... FOR
UPDATE`` on PostgreSQL and MariaDB/MySQL; SQLite transactions are ``BEGIN IMMEDIATE``,
which serialises writers), and expiry is compared with the database's clock, so two
machines whose clocks disagree still agree on who holds a session. The fencing
token grows with every new holder; a save through a store that took the lease is
refused (LeaseLostError) once another holder has taken it over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.dialects import mysql as sa_mysql
    from sqlalchemy.dialects import postgresql as sa_pg
    from sqlalchemy.dialects import sqlite as sa_sqlite
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("SQLStore needs SQLAlchemy: pip install 'resilient-tg[sql]'") from exc

from .._errors import LeaseLostError, ResilientTgError, SessionCorruptError, SessionInUseError
from ._base import Lease, SessionStore, _check_lease_args
from ._data import SessionData, decode, encode
from ._encryption import Encryptor, is_sealed, resolve_key

__all__ = ["SCHEMA_VERSION", "SQLStore"]

log = logging.getLogger("resilient_tg.stores")

#: The table layout this code writes; a database with a newer one is refused, not guessed at.
SCHEMA_VERSION = 1

_T = TypeVar("_T")

# Plain URL schemes and the async driver each one gets; an explicit "+driver" is kept.
_DEFAULT_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "mysql": "asyncmy",
    "mariadb": "asyncmy",
}
_EXTRAS = {"sqlite": "sql", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_OWN_QUERY_KEYS = ("name", "table_prefix", "key_env")
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")
_MAX_TEXT = 255  # session names and lease holders are VARCHAR(255)

# The database's clock as float seconds since the epoch (leases compare against it).
_DB_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
    "mariadb": "UNIX_TIMESTAMP(NOW(6))",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


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
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"SQLStore url must be a string, got {type(url).__name__}")
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - the message could echo a password; ours does not
            raise ValueError(
                "SQLStore url is not a database URL (e.g. 'sqlite:///path/sessions.db', "
                "'postgresql://user@host/db')"
            ) from None
        query = dict(parsed.query)
        name = _merge_option("name", name, query.get("name"))
        table_prefix = _merge_option("table_prefix", table_prefix, query.get("table_prefix"))
        encryption_key_env = _merge_option("key_env", encryption_key_env, query.get("key_env"))
        name = "default" if name is None else name
        table_prefix = "resilient_tg_" if table_prefix is None else table_prefix
        _check_name(name)
        if not isinstance(table_prefix, str) or not _PREFIX_RE.match(table_prefix):
            raise ValueError(
                "SQLStore table_prefix must be a letter or '_' then up to 39 letters, "
                f"digits or '_', got {table_prefix!r}"
            )
        delays = tuple(float(d) for d in retry)
        if any(not (math.isfinite(d) and d >= 0) for d in delays):
            raise ValueError(f"SQLStore retry delays must be finite and >= 0, got {delays!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"SQLStore timeout must be > 0 seconds, got {timeout!r}")

        base, _, driver = parsed.drivername.partition("+")
        base = "postgresql" if base == "postgres" else base
        if base not in _DEFAULT_DRIVERS:
            raise ValueError(
                f"SQLStore supports sqlite, postgresql, mysql and mariadb URLs, not {base!r}"
            )
        self._backend = base
        self._driver = driver or _DEFAULT_DRIVERS[base]
        own = {k: v for k, v in query.items() if k not in _OWN_QUERY_KEYS}
        if base in ("mysql", "mariadb") and "charset" not in own:
            own["charset"] = "utf8mb4"
        self._url: URL = parsed.set(drivername=f"{base}+{self._driver}", query=own)
        # URL.set() ignores None, so the shown URL is rebuilt without password and query.
        shown = URL.create(
            parsed.drivername,
            username=parsed.username,
            host=parsed.host,
            port=parsed.port,
            database=parsed.database,
        )
        self._display = f"{shown.render_as_string(hide_password=False)}#{name}"
        self.name = name
        self.table_prefix = table_prefix
        self._retry = delays
        self._timeout = float(timeout)

        key = resolve_key(encryption_key, encryption_key_env)
        # The key is bound to the session name, not to the host: a database restored
        # on another server (or reached by another host name) still decrypts.
        self._encryptor = (
            None if key is None else Encryptor(key, context=f"resilient_tg.SQLStore#{name}")
        )

        self._meta = sa.MetaData()
        self._schema = sa.Table(
            f"{table_prefix}schema",
            self._meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("version", sa.Integer, nullable=False),
        )
        self._sessions = sa.Table(
            f"{table_prefix}sessions",
            self._meta,
            sa.Column("name", sa.String(_MAX_TEXT), primary_key=True),
            sa.Column(
                "data",
                sa.LargeBinary().with_variant(sa_mysql.LONGBLOB(), "mysql", "mariadb"),
                nullable=False,
            ),
            sa.Column("updated_at", sa.Double, nullable=False),
        )
        self._leases = sa.Table(
            f"{table_prefix}leases",
            self._meta,
            sa.Column("name", sa.String(_MAX_TEXT), primary_key=True),
            sa.Column("holder", sa.String(_MAX_TEXT), nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Column("token", sa.BigInteger, nullable=False),
        )
        self._engine: AsyncEngine | None = None
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._schema_ready = False
        self._setup_lock: asyncio.Lock | None = None
        # (holder, token) of the lease taken through this store: saves are fenced by it.
        self._fence: tuple[str, int] | None = None

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
            now: sa.ColumnClause[Any] = sa.literal_column(_DB_NOW[self._dialect(conn)])
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
        _check_holder(holder, ttl)
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
        """Extend our lease, even if it lapsed while nobody else took it."""
        _check_holder(holder, ttl)
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
        """Dispose the connection pool; the store reconnects if used again."""
        engine, self._engine = self._engine, None
        self._setup_lock = None
        if engine is not None:
            await engine.dispose()

    # Internals ------------------------------------------------------------------

    async def _run(self, what: str, op: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run ``op`` in one transaction; retry it while the database is unreachable."""
        attempt = 0
        while True:
            attempt += 1
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
                # arrives as the operation completes.
                with anyio.fail_after(self._timeout):
                    return await self._attempt(op)
            except Exception as exc:
                if not _transient(exc):
                    raise
                if attempt > len(self._retry):
                    raise ConnectionError(
                        f"{self._display}: could not {what} after {attempt} attempt(s): "
                        f"{_brief(exc)}"
                    ) from exc
                delay = self._retry[attempt - 1]
                log.warning(
                    "%s: could not %s (%s); retrying in %.2fs (attempt %d of %d)",
                    self._display,
                    what,
                    _brief(exc),
                    delay,
                    attempt,
                    len(self._retry) + 1,
                )
                await asyncio.sleep(delay)

    async def _attempt(self, op: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        engine = await self._ready()
        async with engine.begin() as conn:
            return await op(conn)

    async def _ready(self) -> AsyncEngine:
        """The engine, created on first use, with the schema checked and created."""
        engine = self._engine
        loop = asyncio.get_running_loop()
        if engine is not None and self._engine_loop is not loop:
            # Used from another event loop (e.g. a second asyncio.run()): the pooled
            # connections belong to the old loop, so drop them unclosed and start over.
            self._engine, self._setup_lock = None, None
            await engine.dispose(close=False)
        elif engine is not None and self._schema_ready:
            return engine
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._engine is None:
                if self._backend == "sqlite":
                    await asyncio.to_thread(_prepare_sqlite_file, self._url.database)
                self._engine = self._make_engine()
                self._engine_loop = loop
            if not self._schema_ready:
                await self._create_schema(self._engine)
                self._schema_ready = True
            return self._engine

    def _make_engine(self) -> AsyncEngine:
        connect_args: dict[str, Any] = {}
        if self._driver == "aiosqlite":
            connect_args["timeout"] = self._timeout  # how long to wait for a busy database
        elif self._driver == "asyncpg":
            connect_args.update(timeout=self._timeout, command_timeout=self._timeout)
        elif self._driver in ("asyncmy", "aiomysql"):
            connect_args["connect_timeout"] = self._timeout
        try:
            engine = create_async_engine(
                self._url,
                pool_pre_ping=True,  # a pooled connection that died in an outage is replaced
                hide_parameters=True,  # SQL errors and logs must never show the session blob
                connect_args=connect_args,
            )
        except ImportError as exc:
            raise ImportError(
                f"SQLStore for {self._backend} needs its driver ({self._driver}): "
                f"pip install 'resilient-tg[{_EXTRAS[self._backend]}]'"
            ) from exc
        if self._backend == "sqlite":
            # Take the write lock at BEGIN, so a read-check-write cannot interleave.
            @event.listens_for(engine.sync_engine, "connect")
            def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.isolation_level = None

            @event.listens_for(engine.sync_engine, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    async def _create_schema(self, engine: AsyncEngine) -> None:
        """Create the tables once, safely when several processes start together."""
        for attempt in range(3):
            try:
                if self._backend in ("mysql", "mariadb"):
                    await self._create_schema_mysql(engine)
                else:
                    async with engine.begin() as conn:
                        if self._backend == "postgresql":
                            # DDL is transactional here; the lock serialises creators.
                            key = zlib.crc32(f"resilient_tg:{self.table_prefix}".encode())
                            await conn.execute(
                                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key}
                            )
                        await conn.run_sync(self._create_tables)
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                # Lost a creation race the locks did not cover: look again.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05)
            else:
                return

    async def _create_schema_mysql(self, engine: AsyncEngine) -> None:
        # MySQL DDL commits implicitly, so a named lock serialises creators instead.
        lock = f"{self.table_prefix}schema"
        async with engine.connect() as conn:
            got = await conn.scalar(
                sa.text("SELECT GET_LOCK(:lock, :timeout)"),
                {"lock": lock, "timeout": max(1, int(self._timeout))},
            )
            if got != 1:
                raise TimeoutError(f"{self._display}: timed out waiting to create the schema")
            try:
                await conn.run_sync(self._create_tables)
                await conn.commit()
            finally:
                await conn.execute(sa.text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
                await conn.commit()

    def _create_tables(self, conn: sa.Connection) -> None:
        schema = self._schema
        version = None
        if sa.inspect(conn).has_table(schema.name):
            version = conn.execute(
                sa.select(schema.c.version).where(schema.c.id == 1)
            ).scalar_one_or_none()
        if version is not None and version > SCHEMA_VERSION:
            raise SessionCorruptError(
                f"{self._display}: the database has session schema version {version}, "
                f"newer than this resilient_tg understands ({SCHEMA_VERSION}); upgrade "
                "resilient_tg (nothing was changed)",
                store=self._display,
            )
        self._meta.create_all(conn, checkfirst=True)
        if version is None:
            conn.execute(sa.insert(schema).values(id=1, version=SCHEMA_VERSION))
            log.info("%s: created the session tables (schema %d)", self._display, SCHEMA_VERSION)

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
        value = await conn.scalar(sa.text(f"SELECT {_DB_NOW[self._dialect(conn)]}"))
        return float(value)

    @staticmethod
    def _dialect(conn: AsyncConnection) -> str:
        return conn.dialect.name


def _merge_option(key: str, given: str | None, in_url: str | tuple[str, ...] | None) -> str | None:
    """A constructor option and the same URL query parameter must agree."""
    if isinstance(in_url, tuple):
        if len(set(in_url)) > 1:
            raise ValueError(f"SQLStore url gives {key}= more than once")
        in_url = in_url[0]
    if given is not None and in_url is not None and given != in_url:
        raise ValueError(f"SQLStore got {key}={given!r} and {key}={in_url!r} in the url")
    return given if given is not None else in_url


def _check_name(name: object) -> None:
    """A session name every backend stores as given: PostgreSQL refuses NUL in text, and
    no driver can encode a lone surrogate; control characters would also break log lines."""
    if not isinstance(name, str):
        raise TypeError(f"SQLStore name must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= _MAX_TEXT:
        raise ValueError(f"SQLStore name must be 1..{_MAX_TEXT} characters, got {len(name)}")
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        kind = "a surrogate" if unicodedata.category(bad) == "Cs" else "a control character"
        raise ValueError(f"SQLStore name must not contain {kind} ({bad!a}), got {name!a}")


def _check_holder(holder: str, ttl: float) -> None:
    _check_lease_args(holder, ttl)
    if len(holder) > _MAX_TEXT:
        raise ValueError(f"lease holder must be at most {_MAX_TEXT} characters")


def _local(db_time: float, db_now: float) -> float:
    """A database timestamp on this machine's clock (time.time()), for Lease and errors."""
    return time.time() + (db_time - db_now)


def _prepare_sqlite_file(database: str | None) -> None:
    """Create the database file 0600 (and its directory 0700) before SQLite does, 0644."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _transient(exc: BaseException) -> bool:
    """Whether retrying may help: the database is unreachable, restarting or busy."""
    if isinstance(exc, ResilientTgError):
        return False
    if isinstance(exc, OSError):
        return not isinstance(exc, _PERMANENT_OS_ERRORS)
    if isinstance(exc, (asyncio.TimeoutError, sa.exc.TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, (sa.exc.OperationalError, sa.exc.InterfaceError)
        )
    return False


def _brief(exc: BaseException) -> str:
    """One line about an error: its type and the first line of its message."""
    inner = getattr(exc, "orig", None) or exc
    first = (str(inner).strip().splitlines() or [""])[0][:200]
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__
