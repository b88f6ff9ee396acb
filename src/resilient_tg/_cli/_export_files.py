"""The files a session is exported to and imported from: Telethon ``.session``
(SQLite) files, StringSession text, and JSON documents from ``export --json``.

What is written is created 0600 and never replaces a file without ``--force``;
failures are CliError (exit 3) naming the file, never the session's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
import tempfile
from pathlib import Path

from .._errors import SessionCorruptError
from ..stores import SessionData, decode
from ..stores._telethon_file import SQLITE_MAGIC
from ._common import EXIT_STORE, EXIT_USAGE, CliError


def string_session(data: SessionData) -> str:
    from telethon.crypto import AuthKey
    from telethon.sessions import StringSession

    session = StringSession()
    try:
        session.set_dc(data.dc_id, data.server_address, data.port)
        session.auth_key = AuthKey(data=data.auth_key)
        text: str = session.save()
    except ValueError:
        raise CliError(
            "a StringSession holds an IP address, and this session's server is "
            f"{data.server_address!r}; export --telethon or --json instead",
            EXIT_USAGE,
        ) from None
    return text


def write_telethon_file(path: str, data: SessionData, *, force: bool) -> None:
    """Write a Telethon .session file with Telethon's own SQLiteSession, created 0600."""
    from telethon.crypto import AuthKey
    from telethon.sessions import SQLiteSession
    from telethon.tl.types import updates

    if force:
        for stale in (path, path + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
    try:
        # An empty file is an empty SQLite database: Telethon fills it, the mode stays.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise CliError(f"{path} exists; --force replaces it", EXIT_STORE) from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}", EXIT_STORE) from None
    session = SQLiteSession(path)
    try:
        session.set_dc(data.dc_id, data.server_address, data.port)
        session.auth_key = AuthKey(data=data.auth_key)
        session.takeout_id = data.takeout_id
        state = data.update_state
        if state is not None:
            date = dt.datetime.fromtimestamp(state.date, tz=dt.timezone.utc)
            session.set_update_state(
                0,
                updates.State(
                    pts=state.pts, qts=state.qts, date=date, seq=state.seq, unread_count=0
                ),
            )
            for channel_id, pts in state.channels.items():
                session.set_update_state(
                    channel_id, updates.State(pts=pts, qts=0, date=date, seq=0, unread_count=0)
                )
        session.save()
    finally:
        session.close()
    if data.entities:
        # Telethon's entities table (id, hash, username, phone, name, date); its own
        # writer takes TL objects, which a stored session no longer has.
        now = int(dt.datetime.now(tz=dt.timezone.utc).timestamp())
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.executemany(
                "insert or replace into entities values (?, ?, ?, ?, ?, ?)",
                [(e.id, e.access_hash, e.username, e.phone, e.name, now) for e in data.entities],
            )


def write_private(path: Path, payload: bytes, *, force: bool) -> None:
    """Create ``path`` 0600 (never widening an existing file's mode); atomic with --force."""
    try:
        if not force:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp files are 0600
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except FileExistsError:
        raise CliError(f"{path} exists; --force replaces it", EXIT_STORE) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", EXIT_STORE) from None


def read_session_file(name: str) -> SessionData:
    """A Telethon .session (SQLite) file, or a JSON document from ``export --json``."""
    from ..stores import FileStore

    path = Path(name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{name}: no such file", EXIT_STORE) from None
    except OSError as exc:
        raise CliError(f"{name}: cannot be read ({exc.strerror})", EXIT_STORE) from None
    try:
        if raw.startswith(SQLITE_MAGIC):
            # Read-only, without changing the file (Telethon's own open would write).
            return asyncio.run(FileStore.import_telethon(path))
        return decode(raw, source=str(path))
    except SessionCorruptError as exc:
        raise CliError(
            f"{exc} (SOURCE must be a Telethon .session file or a JSON file from "
            "`session export --json`)",
            EXIT_STORE,
        ) from None
    except OSError as exc:
        raise CliError(f"{name}: cannot be read ({exc.strerror})", EXIT_STORE) from None
