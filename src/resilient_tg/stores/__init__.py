"""Session stores: where a session lives between runs, and who may use it now.

``SessionStore`` is the abstract base to subclass; ``FileStore`` (the embedded
default), ``SQLStore`` (SQLite, PostgreSQL, MariaDB/MySQL), ``EnvStringStore`` and
``MemoryStore`` ship with the library; ``open_store(url)`` picks one from a URL;
``StoreSession`` lets a plain Telethon client use any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Lease, SessionStore, default_holder
from ._bridge import StoreSession
from ._data import Entity, SessionData, UpdateState, decode, encode
from ._memory import MemoryStore
from ._url import open_store

if TYPE_CHECKING:
    from ._env import EnvStringStore
    from ._file import FileStore
    from ._sql import SQLStore

__all__ = [
    "Entity",
    "EnvStringStore",
    "FileStore",
    "Lease",
    "MemoryStore",
    "SQLStore",
    "SessionData",
    "SessionStore",
    "StoreSession",
    "UpdateState",
    "decode",
    "default_holder",
    "encode",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # FileStore, SQLStore and EnvStringStore import on first use, so that the SQL extra
    # is needed only by those who use SQLStore.
    if name == "FileStore":
        from ._file import FileStore

        return FileStore
    if name == "SQLStore":
        from ._sql import SQLStore

        return SQLStore
    if name == "EnvStringStore":
        from ._env import EnvStringStore

        return EnvStringStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
