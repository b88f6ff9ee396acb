"""Read-only commands (``check``, ``session export``, the source of ``session copy``)
never create a file or a database: a store that is not there is an error, found
before the store does any I/O (a FileStore lease would create the lock file and its
directory, an SQLStore on SQLite the database file, its directory and its tables).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..stores import SessionStore
from ._common import EXIT_STORE, CliError

__all__ = ["require_existing"]


def require_existing(url: str, store: SessionStore) -> None:
    """Raise CliError (exit 3) if ``store``, opened from ``url``, has nowhere a session
    could be: a session file that does not exist, a SQLite database that does not exist
    or has no sessions table. Stores on a server (PostgreSQL, MariaDB) and in memory
    are left to the store itself."""
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    where = store.describe()
    if scheme == "file":
        path: Path = getattr(store, "path")  # noqa: B009 - a FileStore, from its URL
        if not path.exists():
            raise CliError(
                f"{where} holds no session: no such file (nothing was created)", EXIT_STORE
            )
    elif scheme == "sqlite":
        _require_sqlite(url, store, where)
    elif scheme == "env":
        fallback: SessionStore | None = getattr(store, "fallback")  # noqa: B009
        query = parse_qs(urlsplit(url).query)
        if fallback is not None and "fallback" in query:
            # Where the session (and everything the command writes back) lives.
            require_existing(query["fallback"][-1], fallback)


def _require_sqlite(url: str, store: Any, where: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).resolve()
    if not path.exists():
        raise CliError(
            f"{where} holds no session: no database file at {path} (nothing was created)",
            EXIT_STORE,
        )
    table = f"{store.table_prefix}sessions"
    try:
        # Read-only: opening it must not create or change anything.
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            found = conn.execute(
                "select 1 from sqlite_master where type = 'table' and name = ?", (table,)
            ).fetchone()
    except sqlite3.Error as exc:
        raise CliError(
            f"{where}: cannot be read as a SQLite database ({exc})", EXIT_STORE
        ) from None
    if found is None:
        raise CliError(
            f"{where} holds no session (no {table} table; nothing was created)", EXIT_STORE
        )
