"""SQLStore's tables and their creation, safe when several processes start at once.

Three tables, their names starting with the store's ``table_prefix``::

    <prefix>schema    id=1, version          the schema version, checked on first use
    <prefix>sessions  name PK, data, updated_at    one row per named session
    <prefix>leases    name PK, holder, expires_at, token
"""

from __future__ import annotations

import asyncio
import logging
import zlib

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import SessionCorruptError
from ._sql_url import MAX_TEXT

log = logging.getLogger("resilient_tg.stores")

#: The table layout this code writes; a database with a newer one is refused, not guessed at.
SCHEMA_VERSION = 1


@attrs.frozen
class Tables:
    """The three tables of one ``table_prefix``."""

    prefix: str
    meta: sa.MetaData
    schema: sa.Table
    sessions: sa.Table
    leases: sa.Table


def make_tables(prefix: str) -> Tables:
    meta = sa.MetaData()
    return Tables(
        prefix=prefix,
        meta=meta,
        schema=sa.Table(
            f"{prefix}schema",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("version", sa.Integer, nullable=False),
        ),
        sessions=sa.Table(
            f"{prefix}sessions",
            meta,
            sa.Column("name", sa.String(MAX_TEXT), primary_key=True),
            sa.Column(
                "data",
                sa.LargeBinary().with_variant(sa_mysql.LONGBLOB(), "mysql", "mariadb"),
                nullable=False,
            ),
            sa.Column("updated_at", sa.Double, nullable=False),
        ),
        leases=sa.Table(
            f"{prefix}leases",
            meta,
            sa.Column("name", sa.String(MAX_TEXT), primary_key=True),
            sa.Column("holder", sa.String(MAX_TEXT), nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Column("token", sa.BigInteger, nullable=False),
        ),
    )


async def create_schema(
    engine: AsyncEngine, tables: Tables, *, backend: str, timeout: float, display: str
) -> None:
    """Create the tables once, safely when several processes start together."""
    for attempt in range(3):
        try:
            if backend in ("mysql", "mariadb"):
                await _create_schema_mysql(engine, tables, timeout=timeout, display=display)
            else:
                async with engine.begin() as conn:
                    if backend == "postgresql":
                        # DDL is transactional here; the lock serialises creators.
                        key = zlib.crc32(f"resilient_tg:{tables.prefix}".encode())
                        await conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key}
                        )
                    await conn.run_sync(_create_tables, tables, display)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Lost a creation race the locks did not cover: look again.
            if attempt == 2:
                raise
            await asyncio.sleep(0.05)
        else:
            return


async def _create_schema_mysql(
    engine: AsyncEngine, tables: Tables, *, timeout: float, display: str
) -> None:
    # MySQL DDL commits implicitly, so a named lock serialises creators instead.
    lock = f"{tables.prefix}schema"
    async with engine.connect() as conn:
        got = await conn.scalar(
            sa.text("SELECT GET_LOCK(:lock, :timeout)"),
            {"lock": lock, "timeout": max(1, int(timeout))},
        )
        if got != 1:
            raise TimeoutError(f"{display}: timed out waiting to create the schema")
        try:
            await conn.run_sync(_create_tables, tables, display)
            await conn.commit()
        finally:
            await conn.execute(sa.text("SELECT RELEASE_LOCK(:lock)"), {"lock": lock})
            await conn.commit()


def _create_tables(conn: sa.Connection, tables: Tables, display: str) -> None:
    schema = tables.schema
    version = None
    if sa.inspect(conn).has_table(schema.name):
        version = conn.execute(
            sa.select(schema.c.version).where(schema.c.id == 1)
        ).scalar_one_or_none()
    if version is not None and version > SCHEMA_VERSION:
        raise SessionCorruptError(
            f"{display}: the database has session schema version {version}, "
            f"newer than this resilient_tg understands ({SCHEMA_VERSION}); upgrade "
            "resilient_tg (nothing was changed)",
            store=display,
        )
    tables.meta.create_all(conn, checkfirst=True)
    if version is None:
        conn.execute(sa.insert(schema).values(id=1, version=SCHEMA_VERSION))
        log.info("%s: created the session tables (schema %d)", display, SCHEMA_VERSION)
