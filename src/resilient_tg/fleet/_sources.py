"""Where a session to import into a fleet comes from: a store, or a string naming one.

A string is read as:

- ``session-string:<StringSession>``: a Telethon session string (from a script; the CLI
  never takes one on its command line, where other users could read it);
- a store URL (anything with ``://``): ``file:///path``, ``env://VAR``, ``sqlite:///...``,
  ``postgresql://...?name=N``... (`open_store`);
- otherwise a file path: a Telethon ``.session`` (SQLite) file, or a session JSON file
  (a `FileStore` file, or ``resilient-tg session export --json``).

The source is only read, never changed; a store's lease is held while it is read, so no
live process writes it meanwhile.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio

from .._errors import SessionCorruptError
from ..stores import SessionData, SessionStore, decode, default_holder, open_store
from ..stores._env import parse_string_session
from ..stores._telethon_file import SQLITE_MAGIC

__all__ = ["SESSION_STRING_PREFIX", "read_source"]

SESSION_STRING_PREFIX = "session-string:"
_LEASE_TTL = 30.0


async def read_source(source: SessionStore | str) -> tuple[SessionData, str]:
    """The logged-in session ``source`` holds, and how to name the source in messages.

    Raises SessionCorruptError when the source holds nothing usable (no session, no auth
    key, unreadable), FileNotFoundError for a missing file, ValueError for a bad URL.
    """
    if isinstance(source, SessionStore):
        return await _from_store(source), source.describe()
    if not isinstance(source, str):
        raise TypeError(
            f"an import source is a SessionStore or a string, not {type(source).__name__}"
        )
    if source.startswith(SESSION_STRING_PREFIX):
        what = "the session string"
        data = parse_string_session(source[len(SESSION_STRING_PREFIX) :], source=what)
        return _usable(data, what), what
    if "://" in source:
        store = open_store(source)
        try:
            return await _from_store(store), store.describe()
        finally:
            with contextlib.suppress(Exception):
                await store.aclose()
    return await _from_path(Path(source)), source


async def _from_store(store: SessionStore) -> SessionData:
    holder = f"resilient-tg-fleet-import@{default_holder()}"
    await store.acquire_lease(holder, _LEASE_TTL)
    try:
        data = await store.load()
    finally:
        with contextlib.suppress(Exception):
            await store.release_lease(holder)
    return _usable(data, store.describe())


async def _from_path(path: Path) -> SessionData:
    from ..stores import FileStore

    raw = await anyio.Path(path).read_bytes()  # FileNotFoundError names the path
    if raw.startswith(SQLITE_MAGIC):
        return _usable(await FileStore.import_telethon(path), str(path))
    # A session JSON document (a FileStore file, or `session export --json`).
    return _usable(decode(raw, source=str(path)), str(path))


def _usable(data: SessionData | None, where: str) -> SessionData:
    if data is None:
        raise SessionCorruptError(f"{where} holds no session", store=where)
    if data.auth_key is None:
        raise SessionCorruptError(
            f"{where} holds a session without an auth key (it never logged in): nothing to import",
            store=where,
        )
    return data
