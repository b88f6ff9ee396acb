"""SQLStore's batch lease operations, run inside one transaction: renew many leases of one
holder, claim many free ones. Names go in chunks, so bound parameters stay well under
every backend's limit."""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ._base import Lease
from ._sql_db import SQLDatabase

__all__ = ["BATCH", "claim_in", "renew_in"]

#: Names per statement.
BATCH = 500


async def renew_in(
    conn: AsyncConnection, leases: sa.Table, holder: str, names: Sequence[str], ttl: float
) -> dict[str, Lease]:
    """Extend the leases of ``names`` that ``holder`` has; return them by name."""
    now = await SQLDatabase.now(conn)
    found: dict[str, int] = {}
    for start in range(0, len(names), BATCH):
        chunk = list(names[start : start + BATCH])
        rows = await conn.execute(
            sa.select(leases.c.name, leases.c.token)
            .where(leases.c.holder == holder, leases.c.name.in_(chunk))
            .with_for_update()
        )
        found.update((str(name), int(token)) for name, token in rows)
        await conn.execute(
            sa.update(leases)
            .where(leases.c.holder == holder, leases.c.name.in_(chunk))
            .values(expires_at=now + ttl)
        )
    expires = _local(now + ttl, now)
    return {name: Lease(holder=holder, expires_at=expires, token=t) for name, t in found.items()}


async def claim_in(
    conn: AsyncConnection,
    leases: sa.Table,
    holder: str,
    names: Sequence[str],
    ttl: float,
    limit: int,
) -> dict[str, Lease]:
    """Take up to ``limit`` of the free leases of ``names`` (rows exist) for ``holder``,
    each with a new token; rows locked by another transaction are skipped."""
    now = await SQLDatabase.now(conn)
    chosen: list[str] = []
    for start in range(0, len(names), BATCH):
        chunk = list(names[start : start + BATCH])
        rows = await conn.execute(
            sa.select(leases.c.name)
            .where(
                leases.c.name.in_(chunk),
                sa.or_(leases.c.holder == "", leases.c.expires_at <= now),
            )
            .with_for_update(skip_locked=True)
        )
        chosen += [str(name) for (name,) in rows]
        if len(chosen) >= limit:
            break
    chosen = chosen[:limit]
    if not chosen:
        return {}
    await conn.execute(
        sa.update(leases)
        .where(leases.c.name.in_(chosen))
        .values(holder=holder, expires_at=now + ttl, token=leases.c.token + 1)
    )
    tokens = await conn.execute(
        sa.select(leases.c.name, leases.c.token).where(leases.c.name.in_(chosen))
    )
    expires = _local(now + ttl, now)
    return {
        str(name): Lease(holder=holder, expires_at=expires, token=int(token))
        for name, token in tokens
    }


def _local(db_time: float, db_now: float) -> float:
    """A database timestamp on this machine's clock (time.time())."""
    return time.time() + (db_time - db_now)
