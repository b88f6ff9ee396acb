"""SQL building blocks of SQLCacheBackend: conditional upserts in each dialect's words.

PostgreSQL and SQLite say ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <newer>``;
MariaDB/MySQL say ``ON DUPLICATE KEY UPDATE col = IF(<newer>, VALUES(col), col)``,
where assignments run left to right and see the columns already assigned, so the
column the condition reads is assigned last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_pg
from sqlalchemy.dialects import sqlite as sa_sqlite

__all__ = ["Update", "chunks", "greatest", "upsert"]

_T = TypeVar("_T")

# How a conflicting row's column is updated: (new values, stored columns) -> expression.
Update = Callable[[Any, Any], Any]

#: Rows per INSERT and ids per IN (...): bound parameters stay far below every limit.
CHUNK = 500


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def greatest(dialect: str, a: Any, b: Any) -> Any:
    """The larger of two SQL values (SQLite's two-argument max)."""
    return sa.func.max(a, b) if dialect == "sqlite" else sa.func.greatest(a, b)


def upsert(
    dialect: str,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    update: Sequence[tuple[str, Update]] = (),
    newer: Update | None = None,
) -> Any:
    """Insert ``rows``; on a primary-key conflict apply ``update`` (nothing when empty),
    only where ``newer`` holds when it is given. The last column of ``update`` must be
    the one ``newer`` reads (MariaDB assigns left to right)."""
    keys = [c.name for c in table.primary_key.columns]
    if dialect in ("mysql", "mariadb"):
        my = sa_mysql.insert(table).values(list(rows))
        new, old = my.inserted, table.c
        if not update:
            return my.on_duplicate_key_update([(keys[0], old[keys[0]])])
        cond = None if newer is None else newer(new, old)
        pairs = []
        for column, value in update:
            expr = value(new, old)
            pairs.append((column, expr if cond is None else sa.func.IF(cond, expr, old[column])))
        return my.on_duplicate_key_update(pairs)
    ins = (sa_pg.insert if dialect == "postgresql" else sa_sqlite.insert)(table).values(list(rows))
    if not update:
        return ins.on_conflict_do_nothing(index_elements=keys)
    new, old = ins.excluded, table.c
    return ins.on_conflict_do_update(
        index_elements=keys,
        set_={column: value(new, old) for column, value in update},
        where=None if newer is None else newer(new, old),
    )


def take(column: str) -> Update:
    """Update a column to the new row's value."""
    return lambda new, _old: new[column]
