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
from resilient_tg.testing.cache_contract import CacheBackendContract

PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("RESILIENT_TG_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mariadb")
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
        backend = SQLCacheBackend(
            database_url(kind, tmp_path), table_prefix=unique_prefix(), pool_size=1, max_overflow=1
        )
        try:
            yield backend
        finally:
            try:
                if kind != "sqlite":
                    await drop_tables(backend)
            finally:
                await backend.aclose()
