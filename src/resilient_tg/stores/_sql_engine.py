"""SQLStore's engine: made with the right driver options, and the errors worth a retry.

The engine never shows parameters in errors or logs (they hold the session blob);
a pooled connection that died in an outage is replaced (checked at checkout). SQLite
transactions take the write lock at BEGIN, so a read-check-write cannot interleave.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._errors import ResilientTgError
from ._sql_url import Target

_EXTRAS = {"sqlite": "sql", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def make_engine(
    target: Target, timeout: float, *, pool_size: int = 5, max_overflow: int = 10
) -> AsyncEngine:
    """An engine for ``target`` whose connects and waits give up after ``timeout``,
    keeping ``pool_size`` connections open and up to ``max_overflow`` more at peaks."""
    connect_args: dict[str, Any] = {}
    if target.driver == "aiosqlite":
        connect_args["timeout"] = timeout  # how long to wait for a busy database
    elif target.driver == "asyncpg":
        connect_args.update(
            timeout=timeout,
            command_timeout=timeout,
            # Every transaction of ours ends within `timeout` (or is given up), so one idle
            # for twice that belongs to a process that stopped (SIGSTOP, a frozen VM): the
            # server ends it, and the row locks it held (a whole worker's leases) no longer
            # block the workers taking those accounts over.
            server_settings={"idle_in_transaction_session_timeout": str(idle_limit_ms(timeout))},
        )
    elif target.driver in ("asyncmy", "aiomysql"):
        connect_args["connect_timeout"] = timeout
    try:
        engine = create_async_engine(
            target.url,
            # A pooled connection that died in an outage is replaced. asyncpg's own ping
            # costs three round trips per checkout (BEGIN, a statement, ROLLBACK); a
            # connection the server closed is known locally, so it is checked for free
            # (below) and one that died silently fails its first statement, which is
            # retried on a new connection (`transient`).
            pool_pre_ping=target.driver != "asyncpg",
            hide_parameters=True,  # SQL errors and logs must never show the session blob
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
    except ImportError as exc:
        raise ImportError(
            f"SQLStore for {target.backend} needs its driver ({target.driver}): "
            f"pip install 'resilient-tg[{_EXTRAS[target.backend]}]'"
        ) from exc
    if target.driver == "asyncpg":

        @event.listens_for(engine.sync_engine, "checkout")
        def _drop_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            if dbapi_connection.driver_connection.is_closed():
                raise sa.exc.DisconnectionError("the server closed this pooled connection")

    if target.backend == "sqlite":
        # Take the write lock at BEGIN, so a read-check-write cannot interleave.
        @event.listens_for(engine.sync_engine, "connect")
        def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def idle_limit_ms(timeout: float) -> int:
    """PostgreSQL's idle_in_transaction_session_timeout for a store's ``timeout``."""
    return max(1000, round(2 * timeout * 1000))


def prepare_sqlite_file(database: str | None) -> None:
    """Create the database file 0600 (and its directory 0700) before SQLite does, 0644."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def transient(exc: BaseException) -> bool:
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


def brief(exc: BaseException) -> str:
    """One line about an error: its type and the first line of its message."""
    inner = getattr(exc, "orig", None) or exc
    first = (str(inner).strip().splitlines() or [""])[0][:200]
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__
