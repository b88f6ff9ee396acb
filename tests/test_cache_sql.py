"""SQLCacheBackend against real SQLite, the local PostgreSQL and the local MariaDB.

Nothing here skips: a database that is not running fails its tests (CI starts them with
.ci/services.sh). Every test works in its own tables (a unique table prefix), through a
pool of at most two connections, and drops its tables afterwards.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from resilient_tg.cache import SQLCacheBackend
from resilient_tg.stores import SessionData, SQLStore
from resilient_tg.stores._sql import shared_database
from resilient_tg.testing.cache_contract import USER, CacheBackendContract, message

PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("RESILIENT_TG_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mariadb")
pytestmark = pytest.mark.anyio

RUN = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
_counter = itertools.count()


def database_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/cache.db"
    return PG_URL if kind == "postgresql" else MARIADB_URL


def unique_prefix() -> str:
    return f"rtgc_{RUN}_{next(_counter)}_"


async def drop_tables(backend: SQLCacheBackend) -> None:
    """Drop every table of the backend's prefix (the cache's and SQLStore's)."""
    engine = await backend._db.ready()
    async with engine.begin() as conn:
        for table in reversed(backend._db.tables.meta.sorted_tables):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestSQLCacheBackend(CacheBackendContract):
    property_examples = 10

    @pytest.fixture
    async def backend(self, kind: str, tmp_path: Path) -> AsyncIterator[SQLCacheBackend]:
        # The contract checks rules, not speed: a bulk of 10,000 tombstones takes longer
        # than the default 5 s per operation on a busy machine.
        backend = SQLCacheBackend(
            database_url(kind, tmp_path),
            table_prefix=unique_prefix(),
            pool_size=1,
            max_overflow=1,
            timeout=30.0,
        )
        try:
            yield backend
        finally:
            try:
                if kind != "sqlite":
                    await drop_tables(backend)
            finally:
                await backend.aclose()


# Construction, sharing a store's pool, limits -----------------------------------------

PASSWORD = "Pa55-w0rd-never-shown"


def test_describe_and_repr_never_show_the_password() -> None:
    backend = SQLCacheBackend(f"postgresql://app:{PASSWORD}@db.example:5433/chat?sslmode=require")
    prefix = backend.table_prefix
    assert backend.describe() == f"postgresql://app@db.example:5433/chat#{prefix}cache"
    other = SQLCacheBackend("postgresql://app@db.example:5433/chat", table_prefix="b_")
    assert other.describe() == "postgresql://app@db.example:5433/chat#b_cache"
    assert PASSWORD not in repr(backend)
    assert PASSWORD not in str(backend)
    assert backend._db.engine is None  # nothing connects before first use


def test_bad_options_are_value_errors_naming_them() -> None:
    for bad, field in (
        ({"table_prefix": "x; drop"}, "table_prefix"),
        ({"timeout": 0}, "timeout"),
        ({"retry": (-1.0,)}, "retry"),
    ):
        with pytest.raises(ValueError, match=field):
            SQLCacheBackend("sqlite:///x.db", **bad)  # type: ignore[arg-type]
    assert SQLCacheBackend("sqlite:///x.db?table_prefix=gw_").table_prefix == "gw_"


async def test_a_backend_made_from_a_store_shares_its_pool_and_prefix(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/both.db", name="bot", table_prefix="app_")
    backend = SQLCacheBackend(store)
    try:
        assert backend.table_prefix == "app_"
        assert backend._db is shared_database(store)
        await backend.put_messages("bot", [message(USER, 1)])
        await store.save(SessionData(dc_id=2, server_address="127.0.0.1", port=443))
        await backend.aclose()  # leaves the store's pool alone
        assert await store.load() is not None
        assert await backend.get_message("bot", USER, 1) == message(USER, 1)
        with pytest.raises(ValueError, match="table_prefix"):
            SQLCacheBackend(store, table_prefix="other_")
    finally:
        await store.aclose()


async def test_versions_outside_telegrams_int32_are_refused_before_any_io(tmp_path: Path) -> None:
    backend = SQLCacheBackend(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(ValueError, match="pts"):
        await backend.put_messages("a", [message(USER, 1, pts=2**31)])
    assert backend._db.engine is None
