"""open_store(url): a store from a URL, for configuration files and the CLI."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from ._base import SessionStore
from ._memory import MemoryStore

__all__ = ["open_store"]

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def open_store(url: str) -> SessionStore:
    """A store for ``memory://``, ``file:///path``, ``sqlite:///path?name=N``,
    ``postgresql://...?name=N``, ``mysql://...`` / ``mariadb://...``, ``env://VAR``.

    Does no I/O. A ``name`` query parameter picks the session inside a SQL database
    (default ``"default"``); ``file:`` URLs take ``key_env=VAR`` and
    ``allow_shared_dir=1`` (see `FileStore`). Unknown schemes are a ValueError naming
    the scheme.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("a store URL looks like 'file:///path/session.json' or 'memory://'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    base = scheme.split("+", 1)[0]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if base == "memory":
        return MemoryStore()
    if base == "file":
        from ._file import FileStore

        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"file URLs name a local path (file:///path), got host {parts.netloc!r}"
            )
        if not parts.path:
            raise ValueError("file:// URL without a path")
        return FileStore(
            unquote(parts.path),
            encryption_key_env=query.get("key_env"),
            allow_shared_dir=_flag(query, "allow_shared_dir"),
        )
    if base == "env":
        from ._env import EnvStringStore

        var = parts.netloc or parts.path.lstrip("/")
        if not var:
            raise ValueError("env:// URL without a variable name (env://TG_SESSION)")
        fallback = open_store(query["fallback"]) if "fallback" in query else None
        return EnvStringStore(var, fallback=fallback)
    if base in _SQL_SCHEMES:
        from ._sql import SQLStore

        return SQLStore(url)
    raise ValueError(f"unknown store URL scheme {parts.scheme!r}")


def _flag(query: dict[str, str], name: str) -> bool:
    """A boolean query parameter (absent: False)."""
    value = query.get(name, "0").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ValueError(f"store URL parameter {name} must be 1 or 0 (true/false), got {value!r}")
