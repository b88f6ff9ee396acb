"""Helpers for fleet tests: accounts seeded into a database, fast policies, URLs."""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_tg import KeepalivePolicy, ReconnectPolicy
from resilient_tg.stores import SessionData, SQLStore
from resilient_tg.testing import MTProtoTestServer, TestUser

PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("RESILIENT_TG_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")

# Scaled down: the server drops a link silent for 1 s, so a 3 s lease is safe (>= 2.5 s).
FLEET_KEEPALIVE = KeepalivePolicy(interval=0.5, timeout=0.5)
FLEET_RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.3, connect_timeout=3.0)
FLEET_TTL = 3.0
FLEET_INTERVAL = 0.5

_RUN = secrets.token_hex(3)
_counter = itertools.count()


def unique_prefix() -> str:
    return f"rtgf_{_RUN}_{next(_counter)}_"


def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        return PG_URL
    if backend == "mariadb":
        return MARIADB_URL
    return f"sqlite:///{tmp_path / 'fleet.db'}"


async def seed_accounts(
    server: MTProtoTestServer, url: str, prefix: str, count: int, *, port: int | None = None
) -> dict[str, TestUser]:
    """``count`` logged-in accounts ``acct-000``... as session rows of the database."""
    base = SQLStore(url, name="seed", table_prefix=prefix)
    users: dict[str, TestUser] = {}
    try:
        for i in range(count):
            name = f"acct-{i:03d}"
            user = server.create_user(f"+1555{i:07d}", f"User {i}")
            key = server.issue_auth_key(user.id)
            await base.session(name).save(
                SessionData(
                    dc_id=server.dc_id,
                    server_address=server.host,
                    port=port or server.port,
                    auth_key=key,
                    ever_authorized=True,
                )
            )
            users[name] = user
    finally:
        await base.aclose()
    return users


async def drop_fleet_tables(url: str, prefix: str) -> None:
    store = SQLStore(url, name="drop", table_prefix=prefix)
    engine = create_async_engine(store._database.target.url)
    try:
        async with engine.begin() as conn:
            for table in ("fleet_accounts", "fleet_workers", "leases", "sessions", "schema"):
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{table}"))
    finally:
        await engine.dispose()
