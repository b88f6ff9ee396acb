"""Reading an SQLStore URL: the options it carries, the driver it gets, and the
form shown in messages (no password, no query).

Query parameters ``name``, ``table_prefix`` and ``key_env`` belong to the store and
must agree with the same constructor options; the rest go to the driver. Error
messages never echo the URL, which could hold a password.
"""

from __future__ import annotations

import re
import unicodedata

import attrs
from sqlalchemy.engine import URL, make_url

# Plain URL schemes and the async driver each one gets; an explicit "+driver" is kept.
DEFAULT_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "mysql": "asyncmy",
    "mariadb": "asyncmy",
}
_OWN_QUERY_KEYS = ("name", "table_prefix", "key_env")
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")
MAX_TEXT = 255  # session names and lease holders are VARCHAR(255)


@attrs.frozen
class StoreOptions:
    """What an SQLStore URL and the constructor options say, checked and merged."""

    parsed: URL
    name: str
    table_prefix: str
    key_env: str | None


@attrs.frozen
class Target:
    """The database to connect to, and how to name it in messages."""

    backend: str  # sqlite, postgresql, mysql or mariadb
    driver: str
    url: URL  # with the driver, without the store's own query parameters
    display: str  # the URL without password or query, then "#name"


def read_options(
    url: object, *, name: str | None, table_prefix: str | None, key_env: str | None
) -> StoreOptions:
    """Parse ``url`` and merge its query options with the given ones (ValueError on a
    conflict, a bad name or a bad prefix)."""
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
    key_env = _merge_option("key_env", key_env, query.get("key_env"))
    name = "default" if name is None else name
    table_prefix = "resilient_tg_" if table_prefix is None else table_prefix
    check_name(name)
    if not isinstance(table_prefix, str) or not _PREFIX_RE.match(table_prefix):
        raise ValueError(
            "SQLStore table_prefix must be a letter or '_' then up to 39 letters, "
            f"digits or '_', got {table_prefix!r}"
        )
    return StoreOptions(parsed=parsed, name=name, table_prefix=table_prefix, key_env=key_env)


def target(options: StoreOptions) -> Target:
    """The backend and driver for the URL (ValueError for an unsupported scheme)."""
    parsed = options.parsed
    base, _, driver = parsed.drivername.partition("+")
    base = "postgresql" if base == "postgres" else base
    if base not in DEFAULT_DRIVERS:
        raise ValueError(
            f"SQLStore supports sqlite, postgresql, mysql and mariadb URLs, not {base!r}"
        )
    driver = driver or DEFAULT_DRIVERS[base]
    own = {k: v for k, v in parsed.query.items() if k not in _OWN_QUERY_KEYS}
    if base in ("mysql", "mariadb") and "charset" not in own:
        own["charset"] = "utf8mb4"
    # URL.set() ignores None, so the shown URL is rebuilt without password and query.
    shown = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    return Target(
        backend=base,
        driver=driver,
        url=parsed.set(drivername=f"{base}+{driver}", query=own),
        display=f"{shown.render_as_string(hide_password=False)}#{options.name}",
    )


def _merge_option(key: str, given: str | None, in_url: str | tuple[str, ...] | None) -> str | None:
    """A constructor option and the same URL query parameter must agree."""
    if isinstance(in_url, tuple):
        if len(set(in_url)) > 1:
            raise ValueError(f"SQLStore url gives {key}= more than once")
        in_url = in_url[0]
    if given is not None and in_url is not None and given != in_url:
        raise ValueError(f"SQLStore got {key}={given!r} and {key}={in_url!r} in the url")
    return given if given is not None else in_url


def check_name(name: object) -> None:
    """A session name every backend stores as given: PostgreSQL refuses NUL in text, and
    no driver can encode a lone surrogate; control characters would also break log lines."""
    if not isinstance(name, str):
        raise TypeError(f"SQLStore name must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_TEXT:
        raise ValueError(f"SQLStore name must be 1..{MAX_TEXT} characters, got {len(name)}")
    bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        kind = "a surrogate" if unicodedata.category(bad) == "Cs" else "a control character"
        raise ValueError(f"SQLStore name must not contain {kind} ({bad!a}), got {name!a}")
