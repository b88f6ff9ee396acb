"""SQLCacheBackend's cached read: span, messages and entities in one SELECT.

`CacheBackend.read_history` needs the chat's span state, its newest live messages and
some entities. Three SELECTs would be three round trips (and, one transaction each,
three commits); here they are the branches of one ``UNION ALL``, each row tagged by its
first column (0: the span state, 1: a message, 2: an entity), so a read is one statement
on one pooled connection.

Why one statement is consistent: the span must not be read after the messages (a span
anchored in between could claim ids the messages read before it lack). A single
statement reads everything from one snapshot: PostgreSQL takes one snapshot per
statement at every isolation level; InnoDB (MariaDB/MySQL) reads the whole statement
from one read view (a statement's own under READ COMMITTED, the transaction's, taken at
this first read, under REPEATABLE READ); SQLite runs a statement inside one read
transaction. So the span, the messages and the entities are the state between two
commits, as if read with the account's lock held, without taking it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ._backend import CachedMessage, HistoryRead, Span, SpanState
from ._sql_schema import CacheTables

__all__ = ["history_read", "read_result"]

_SPAN, _MESSAGE, _ENTITY = 0, 1, 2


def _tag(kind: int) -> Any:
    # Inline, not a bound parameter: PostgreSQL would type a bare parameter as text.
    return sa.literal_column(str(kind), sa.Integer).label("k")


def history_read(
    t: CacheTables, account: str, chat_id: int, below: int | None, limit: int, peers: Sequence[int]
) -> Any:
    """The one SELECT of a read: columns k, id, date, edit_date, pts, deleted, at, body."""
    a, c, m, e = t.accounts, t.chats, t.messages, t.entities
    chat = sa.and_(c.c.account == account, c.c.chat_id == chat_id)

    def chat_column(column: Any, default: str) -> Any:
        found = sa.select(column).where(chat).scalar_subquery()
        return sa.func.coalesce(found, sa.literal_column(default))

    zero: Any = sa.literal_column("0")
    epoch = sa.select(a.c.epoch).where(a.c.account == account).scalar_subquery()
    span = sa.select(
        _tag(_SPAN),
        sa.func.coalesce(epoch, zero).label("id"),  # the account's epoch
        chat_column(c.c.epoch, "0").label("date"),  # the chat's epoch
        chat_column(c.c.has_span, "0").label("edit_date"),
        chat_column(c.c.low, "0").label("pts"),
        chat_column(c.c.from_start, "0").label("deleted"),
        chat_column(c.c.anchored_at, "0.0").label("at"),
        sa.null().label("body"),
    )
    newest = sa.select(m.c.id, m.c.date, m.c.edit_date, m.c.pts, m.c.deleted, m.c.body).where(
        m.c.account == account, m.c.chat_id == chat_id, m.c.deleted == 0
    )
    if below is not None:
        newest = newest.where(m.c.id < below)
    page = newest.order_by(m.c.id.desc()).limit(max(0, limit)).subquery("page")
    messages = sa.select(
        _tag(_MESSAGE),
        page.c.id,
        page.c.date,
        page.c.edit_date,
        page.c.pts,
        page.c.deleted,
        sa.null().label("at"),
        page.c.body,
    )
    branches: list[Any] = [span, messages]
    if peers:
        branches.append(
            sa.select(
                _tag(_ENTITY),
                e.c.peer_id,
                zero,
                zero,
                zero,
                zero,
                sa.null(),
                e.c.body,
            ).where(e.c.account == account, e.c.peer_id.in_(list(peers)))
        )
    return sa.union_all(*branches)


def read_result(chat_id: int, rows: Any) -> HistoryRead:
    """The rows of `history_read` as a HistoryRead."""
    state = SpanState(None, "0.0")
    messages: list[CachedMessage] = []
    entities: dict[int, bytes] = {}
    for row in rows:
        kind = int(row[0])
        if kind == _SPAN:
            token = f"{int(row.id)}.{int(row.date)}"
            span = Span(int(row.pts), bool(row.deleted), float(row.at)) if row.edit_date else None
            state = SpanState(span, token)
        elif kind == _MESSAGE:
            messages.append(
                CachedMessage(
                    chat_id=int(chat_id),
                    id=int(row.id),
                    date=int(row.date),
                    edit_date=int(row.edit_date),
                    pts=int(row.pts),
                    deleted=bool(row.deleted),
                    body=bytes(row.body),
                )
            )
        else:
            entities[int(row.id)] = bytes(row.body)
    messages.sort(key=lambda r: r.id, reverse=True)  # a UNION keeps no order
    return HistoryRead(state, messages, entities)
