"""Reading a Telethon ``.session`` file (SQLite) into SessionData, for
`FileStore.import_telethon`.

The file is opened read-only and never changed. Anything that is not a Telethon
session, or holds none, is a SessionCorruptError naming the file and what is wrong,
never a value from it (it could be key material).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from .._errors import SessionCorruptError
from ._data import AUTH_KEY_SIZE, Entity, SessionData, UpdateState

SQLITE_MAGIC = b"SQLite format 3\x00"


def read_telethon_session(name: str) -> SessionData:
    """The session in a Telethon ``.session`` file, opened read-only (blocking I/O)."""
    path = Path(os.path.abspath(name))
    where = str(path)

    def corrupt(what: str) -> SessionCorruptError:
        return SessionCorruptError(f"Telethon session file {where}: {what}", store=path.as_uri())

    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "no Telethon session file at this path", where
        ) from None
    except OSError as exc:
        raise corrupt(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if header != SQLITE_MAGIC:
        raise corrupt("not a SQLite database, so not a Telethon .session file")
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise corrupt(f"cannot be opened read-only ({_sqlite_reason(exc)})") from None
    try:
        return _telethon_rows(conn, corrupt)
    except sqlite3.Error as exc:
        raise corrupt(f"not a readable Telethon session ({_sqlite_reason(exc)})") from None
    except UnicodeDecodeError:  # damaged text in the schema or a row
        raise corrupt("not a readable Telethon session (damaged text, not UTF-8)") from None
    except RecursionError:  # pragma: no cover - defensive
        raise corrupt("not a readable Telethon session") from None
    finally:
        conn.close()


def _telethon_rows(conn: sqlite3.Connection, corrupt: Any) -> SessionData:
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    if not {"version", "sessions"} <= tables:
        raise corrupt("has no Telethon 'version'/'sessions' tables")
    cur = conn.execute("select * from sessions")
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    if not rows or rows[0][columns.index("dc_id") if "dc_id" in columns else 0] in (0, None):
        # Telethon writes a row with dc_id 0 when it creates the file, before any connect.
        raise corrupt("holds no session to import (Telethon never connected with it)")
    if len(rows) > 1:
        raise corrupt(f"holds {len(rows)} sessions; Telethon writes one")
    row = dict(zip(columns, rows[0], strict=True))
    missing = {"dc_id", "server_address", "port", "auth_key"} - row.keys()
    if missing:
        raise corrupt(f"sessions table lacks column(s) {', '.join(sorted(missing))}")
    key = row["auth_key"]
    if key in (None, b""):
        auth_key = None
    elif isinstance(key, bytes) and len(key) == AUTH_KEY_SIZE:
        auth_key = key
    else:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise corrupt(f"auth key has the wrong size or type ({size}, need {AUTH_KEY_SIZE} bytes)")

    state: UpdateState | None = None
    entities: list[Entity] = []
    try:
        if "update_state" in tables:
            account: tuple[Any, ...] | None = None
            channels: dict[int, int] = {}
            for sid, pts, qts, date, seq in conn.execute(
                "select id, pts, qts, date, seq from update_state"
            ):
                if sid == 0:
                    account = (pts, qts, date, seq)
                else:
                    channels[_as_int(sid)] = _as_int(pts)
            if account is not None or channels:
                pts, qts, date, seq = account or (0, 0, 0, 0)
                state = UpdateState(
                    pts=_as_int(pts),
                    qts=_as_int(qts),
                    date=_as_int(date),
                    seq=_as_int(seq),
                    channels=channels,
                )
        if "entities" in tables:
            for eid, ehash, username, phone, name in conn.execute(
                "select id, hash, username, phone, name from entities"
            ):
                entities.append(
                    Entity(
                        id=_as_int(eid),
                        access_hash=_as_int(ehash),
                        username=_as_opt_str(username),
                        phone=None if phone is None else str(_as_phone(phone)),
                        name=_as_opt_str(name),
                    )
                )
        takeout = row.get("takeout_id")
        return SessionData(
            dc_id=_as_int(row["dc_id"]),
            server_address=_as_opt_str(row["server_address"]) or "",
            port=_as_int(row["port"]),
            auth_key=auth_key,
            takeout_id=None if takeout is None else _as_int(takeout),
            update_state=state,
            entities=tuple(entities),
            # A Telethon file holds a session someone logged in: a 401 means it was revoked.
            ever_authorized=auth_key is not None,
        )
    except (TypeError, ValueError) as exc:
        # Name the field, never the value (it could be key material).
        text = str(exc)
        field = text.split(" must ")[0] if " must " in text else "a value has the wrong type"
        raise corrupt(f"has an invalid field ({field})") from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("a number must be finite")
        return int(value)
    return value


def _as_phone(value: Any) -> str:
    # Telethon's phone column has integer affinity: digits come back as an int.
    if isinstance(value, str):
        return value
    return str(_as_int(value))


def _as_opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("expected text")


def _sqlite_reason(exc: sqlite3.Error) -> str:
    # SQLite's messages ("file is not a database", "no such column: x") hold no data.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
