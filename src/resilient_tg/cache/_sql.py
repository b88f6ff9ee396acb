"""SQLCacheBackend: the message cache in SQLite, PostgreSQL or MariaDB/MySQL.

Needs the ``sql`` extra (and ``postgres`` or ``mysql`` for those databases), like
`resilient_tg.stores.SQLStore`, whose engine, retries and table creation it reuses; its
tables (`._sql_schema`) sit beside SQLStore's, under the same ``table_prefix``, and are
created on first use. Given an SQLStore instead of a URL it shares that store's pool.

Every operation is one short transaction. Writes lock the account's row first (``SELECT
... FOR UPDATE``; SQLite transactions are ``BEGIN IMMEDIATE``), so the writes of one
account from racing processes apply one after the other; messages and dialogs merge by
a conditional upsert (the version compared in SQL), spans by compare-and-set on epochs
read under that lock. Read marks and `touch` are one upsert with GREATEST each, atomic
without the lock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("SQLCacheBackend needs SQLAlchemy: pip install 'resilient-tg[sql]'") from exc

from ..stores._sql import SQLStore, shared_database
from ..stores._sql_db import SQLDatabase
from ..stores._sql_schema import make_tables
from ..stores._sql_url import read_options, target
from ._backend import (
    CacheBackend,
    CachedDialog,
    ChatUsage,
    Cursor,
    HistoryRead,
    ReadMarks,
    Span,
    SpanState,
)
from ._sql_messages import SQLMessages
from ._sql_ops import CHUNK, chunks, greatest, take, upsert
from ._sql_reads import history_read, read_result
from ._sql_schema import ACCOUNT_DEFAULTS, CHAT_DEFAULTS, add_cache_tables

__all__ = ["SQLCacheBackend"]


class SQLCacheBackend(SQLMessages, CacheBackend):
    """The cache in a SQL database; see the module docs.

    ``url`` is an SQLStore URL (``sqlite:///path``, ``postgresql://user@host/db``,
    ``mariadb://...``; ``table_prefix`` may be a query parameter) or an `SQLStore`, whose
    database, pool and ``table_prefix`` are then shared (`aclose` leaves them to it).
    ``retry``, ``timeout``, ``pool_size`` and ``max_overflow`` are as for SQLStore.
    """

    def __init__(
        self,
        url: str | SQLStore,
        *,
        table_prefix: str | None = None,
        retry: Sequence[float] = (0.2, 0.5, 1.0),
        timeout: float = 5.0,
        pool_size: int = 2,
        max_overflow: int = 3,
    ) -> None:
        if isinstance(url, SQLStore):
            if table_prefix is not None and table_prefix != url.table_prefix:
                raise ValueError("SQLCacheBackend shares the store's table_prefix; give none")
            database = shared_database(url)
            self._owns_database = False
        else:
            options = read_options(url, name=None, table_prefix=table_prefix, key_env=None)
            delays = tuple(float(d) for d in retry)
            if any(not (math.isfinite(d) and d >= 0) for d in delays):
                raise ValueError(f"SQLCacheBackend retry delays must be >= 0, got {delays!r}")
            if not (math.isfinite(timeout) and timeout > 0):
                raise ValueError(f"SQLCacheBackend timeout must be > 0 seconds, got {timeout!r}")
            database = SQLDatabase(
                target(options),
                make_tables(options.table_prefix),
                retry=delays,
                timeout=float(timeout),
                pool_size=pool_size,
                max_overflow=max_overflow,
            )
            self._owns_database = True
        self._db = database
        self.table_prefix = database.tables.prefix
        self._t = add_cache_tables(database.tables)
        database.tables_added()
        # Two caches in one database differ by their tables: the name says which.
        self._display = f"{database.display}#{self.table_prefix}cache"

    def __repr__(self) -> str:
        return f"<SQLCacheBackend {self._display}>"

    def describe(self) -> str:
        """The URL without password or query, then ``#<table_prefix>cache`` (its tables
        are ``<table_prefix>cache_*``)."""
        return self._display

    async def aclose(self) -> None:
        if self._owns_database:
            await self._db.aclose()

    async def read_history(
        self,
        account: str,
        chat_id: int,
        *,
        below: int | None,
        limit: int,
        peers: Iterable[int] = (),
        touch: float | None = None,
    ) -> HistoryRead:
        """One SELECT (see `._sql_reads`: one snapshot), on PostgreSQL in autocommit (no
        BEGIN and COMMIT round trips); with ``touch``, the read's upsert after it, in one
        transaction on one connection."""
        wanted = sorted({int(p) for p in peers})
        extra, wanted = wanted[CHUNK:], wanted[:CHUNK]
        query = history_read(self._t, account, chat_id, below, limit, wanted)

        async def op(conn: AsyncConnection) -> HistoryRead:
            found = read_result(chat_id, await conn.execute(query))
            if touch is not None:
                if conn.dialect.name == "postgresql":
                    # A lost touch only makes a chat look read less recently: this
                    # commit need not wait for the WAL to reach the disk.
                    await conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
                await self._forward_in(conn, account, chat_id, last_read=float(touch))
            return found

        read = await self._run("read history", op, single=touch is None)
        if extra:  # more peers than one IN (...) holds: the rest in a read of their own
            read.entities.update(await self.entities(account, extra))
        return read

    # -- spans -------------------------------------------------------------------------

    async def span(self, account: str, chat_id: int) -> SpanState:
        a, c = self._t.accounts, self._t.chats

        async def op(conn: AsyncConnection) -> SpanState:
            epoch = await conn.scalar(sa.select(a.c.epoch).where(a.c.account == account))
            row = (
                await conn.execute(sa.select(c).where(self._chat_where(account, chat_id)))
            ).one_or_none()
            token = f"{int(epoch or 0)}.{int(row.epoch) if row else 0}"
            if row is None or not row.has_span:
                return SpanState(None, token)
            span = Span(int(row.low), bool(row.from_start), float(row.anchored_at))
            return SpanState(span, token)

        return await self._run("read a span", op)

    async def set_span(self, account: str, chat_id: int, span: Span, token: str) -> bool:
        c = self._t.chats
        values = _span_values(span)

        async def op(conn: AsyncConnection) -> bool:
            row = await self._lock(conn, account)
            chat_epoch = await conn.scalar(
                sa.select(c.c.epoch).where(self._chat_where(account, chat_id))
            )
            if f"{int(row.epoch)}.{int(chat_epoch or 0)}" != token:
                return False
            await self._ensure_chats(conn, account, [chat_id])
            await conn.execute(
                sa.update(c).where(self._chat_where(account, chat_id)).values(**values)
            )
            return True

        return await self._run("set a span", op)

    async def end_spans(self, account: str, chat_ids: Iterable[int] | None = None) -> None:
        a, c = self._t.accounts, self._t.chats
        chats = None if chat_ids is None else sorted({int(i) for i in chat_ids})
        ended = {"has_span": 0, "low": 0, "from_start": 0, "anchored_at": 0.0}

        async def op(conn: AsyncConnection) -> None:
            await self._lock(conn, account)
            account_values: dict[str, Any] = {
                "dialog_epoch": a.c.dialog_epoch + 1,
                "d_span": 0,
            }
            if chats is None:
                account_values["epoch"] = a.c.epoch + 1
                await conn.execute(sa.update(c).where(c.c.account == account).values(**ended))
            else:
                await self._ensure_chats(conn, account, chats)
                for part in chunks(chats):
                    await conn.execute(
                        sa.update(c)
                        .where(c.c.account == account, c.c.chat_id.in_(part))
                        .values(epoch=c.c.epoch + 1, **ended)
                    )
            await conn.execute(sa.update(a).where(a.c.account == account).values(**account_values))

        await self._run("end spans", op)

    # -- per-chat state ----------------------------------------------------------------

    async def read_marks(self, account: str, chat_id: int) -> ReadMarks:
        c = self._t.chats

        async def op(conn: AsyncConnection) -> ReadMarks:
            query = sa.select(c.c.inbox, c.c.outbox).where(self._chat_where(account, chat_id))
            row = (await conn.execute(query)).one_or_none()
            return ReadMarks() if row is None else ReadMarks(int(row.inbox), int(row.outbox))

        return await self._run("read read marks", op)

    async def _forward(self, what: str, account: str, chat_id: int, **values: Any) -> None:
        """Move columns of a chat's row forward (never back): one upsert with GREATEST,
        atomic without the account's lock (`touch` comes with every read)."""

        async def op(conn: AsyncConnection) -> None:
            await self._forward_in(conn, account, chat_id, **values)

        await self._run(what, op)

    async def _forward_in(
        self, conn: AsyncConnection, account: str, chat_id: int, **values: Any
    ) -> None:
        c, d = self._t.chats, conn.dialect.name
        row = {"account": account, "chat_id": chat_id, **CHAT_DEFAULTS, **values}
        update = [(k, lambda new, old, k=k: greatest(d, old[k], new[k])) for k in values]
        await conn.execute(upsert(d, c, [row], update=update))

    async def mark_read(
        self, account: str, chat_id: int, *, inbox_max_id: int = 0, outbox_max_id: int = 0
    ) -> None:
        await self._forward(
            "mark read", account, chat_id, inbox=int(inbox_max_id), outbox=int(outbox_max_id)
        )

    async def touch(self, account: str, chat_id: int, when: float) -> None:
        await self._forward("record a read", account, chat_id, last_read=float(when))

    async def chats(self, account: str) -> list[int]:
        found = await self._usage(account)
        return sorted(u.chat_id for u in found)

    async def usage(self) -> list[ChatUsage]:
        return await self._usage(None)

    async def _usage(self, account: str | None) -> list[ChatUsage]:
        t, c = self._t.messages, self._t.chats

        async def op(conn: AsyncConnection) -> list[ChatUsage]:
            live = sa.func.sum(sa.case((t.c.deleted == 0, 1), else_=0))
            counts = sa.select(t.c.account, t.c.chat_id, live).group_by(t.c.account, t.c.chat_id)
            state = sa.select(c.c.account, c.c.chat_id, c.c.last_read).where(
                sa.or_(c.c.has_span == 1, c.c.inbox > 0, c.c.outbox > 0, c.c.last_read > 0)
            )
            if account is not None:
                counts = counts.where(t.c.account == account)
                state = state.where(c.c.account == account)
            found: dict[tuple[str, int], list[Any]] = {}
            for name, chat_id, n in await conn.execute(counts):
                found[(str(name), int(chat_id))] = [int(n or 0), 0.0]
            for name, chat_id, last_read in await conn.execute(state):
                found.setdefault((str(name), int(chat_id)), [0, 0.0])[1] = float(last_read)
            return [ChatUsage(k[0], k[1], v[0], v[1]) for k, v in found.items()]

        return await self._run("read usage", op)

    async def drop_chat(self, account: str, chat_id: int) -> None:
        a, t, c = self._t.accounts, self._t.messages, self._t.chats

        async def op(conn: AsyncConnection) -> None:
            await self._lock(conn, account)
            await conn.execute(sa.delete(t).where(t.c.account == account, t.c.chat_id == chat_id))
            await self._ensure_chats(conn, account, [chat_id])
            fresh = {k: v for k, v in CHAT_DEFAULTS.items() if k != "epoch"}
            await conn.execute(
                sa.update(c)
                .where(self._chat_where(account, chat_id))
                .values(epoch=c.c.epoch + 1, **fresh)
            )
            await conn.execute(
                sa.update(a)
                .where(a.c.account == account)
                .values(dialog_epoch=a.c.dialog_epoch + 1, d_span=0)
            )

        await self._run("drop a chat", op)

    # -- account state -----------------------------------------------------------------

    async def cursor(self, account: str) -> Cursor | None:
        a, ch = self._t.accounts, self._t.channels

        async def op(conn: AsyncConnection) -> Cursor | None:
            row = (await conn.execute(sa.select(a).where(a.c.account == account))).one_or_none()
            if row is None or not row.has_cursor:
                return None
            query = sa.select(ch.c.channel_id, ch.c.pts).where(ch.c.account == account)
            channels = {int(i): int(p) for i, p in await conn.execute(query)}
            return Cursor(
                pts=int(row.pts),
                qts=int(row.qts),
                date=int(row.date),
                seq=int(row.seq),
                channels=channels,
                current_at=float(row.current_at),
            )

        return await self._run("read the cursor", op)

    async def set_cursor(self, account: str, cursor: Cursor) -> None:
        a, ch = self._t.accounts, self._t.channels
        fields = {
            "pts": int(cursor.pts),
            "qts": int(cursor.qts),
            "date": int(cursor.date),
            "seq": int(cursor.seq),
            "current_at": float(cursor.current_at),
        }
        channels = [
            {"account": account, "channel_id": int(k), "pts": int(v)}
            for k, v in sorted(cursor.channels.items())
        ]

        async def op(conn: AsyncConnection) -> None:
            row = await self._lock(conn, account)
            values: dict[str, Any] = {"has_cursor": 1}
            for k, v in fields.items():
                values[k] = v if not row.has_cursor else max(v, getattr(row, k))
            await conn.execute(sa.update(a).where(a.c.account == account).values(**values))
            d = conn.dialect.name
            update = [("pts", lambda new, old: greatest(d, old.pts, new.pts))]
            for part in chunks(channels):
                await conn.execute(upsert(d, ch, part, update=update))

        await self._run("store the cursor", op)

    async def dialogs(self, account: str) -> tuple[list[CachedDialog], SpanState]:
        a, g = self._t.accounts, self._t.dialogs

        async def op(conn: AsyncConnection) -> tuple[list[CachedDialog], SpanState]:
            row = (await conn.execute(sa.select(a).where(a.c.account == account))).one_or_none()
            query = (
                sa.select(g)
                .where(g.c.account == account)
                .order_by(g.c.pinned.desc(), g.c.top_date.desc(), g.c.top_id.desc())
            )
            dialogs = [
                CachedDialog(
                    int(r.chat_id), int(r.top_id), int(r.top_date), bool(r.pinned), bytes(r.body)
                )
                for r in await conn.execute(query)
            ]
            if row is None:
                return dialogs, SpanState(None, "0.0")
            token = f"{int(row.epoch)}.{int(row.dialog_epoch)}"
            if not row.d_span:
                return dialogs, SpanState(None, token)
            span = Span(int(row.d_low), bool(row.d_from_start), float(row.d_anchored_at))
            return dialogs, SpanState(span, token)

        return await self._run("read dialogs", op)

    async def put_dialogs(
        self, account: str, dialogs: Sequence[CachedDialog], *, span: Span | None, token: str | None
    ) -> bool:
        a, g = self._t.accounts, self._t.dialogs
        merged: dict[int, CachedDialog] = {}
        for dialog in dialogs:  # one chat twice: as if put one after the other
            old = merged.get(dialog.chat_id)
            if old is None or dialog.top_id >= old.top_id:
                merged[dialog.chat_id] = dialog
        rows = [
            {
                "account": account,
                "chat_id": int(x.chat_id),
                "top_id": int(x.top_id),
                "top_date": int(x.top_date),
                "pinned": int(x.pinned),
                "body": bytes(x.body),
            }
            for x in merged.values()
        ]
        values = None if span is None else _span_values(span)

        async def op(conn: AsyncConnection) -> bool:
            row = await self._lock(conn, account)
            d = conn.dialect.name
            update = [(k, take(k)) for k in ("top_date", "pinned", "body", "top_id")]
            for part in chunks(rows):
                await conn.execute(
                    upsert(
                        d, g, part, update=update, newer=lambda new, old: new.top_id >= old.top_id
                    )
                )
            if values is None or token != f"{int(row.epoch)}.{int(row.dialog_epoch)}":
                return False
            dialog_values = {
                "d_span": 1,
                "d_low": values["low"],
                "d_from_start": values["from_start"],
                "d_anchored_at": values["anchored_at"],
            }
            await conn.execute(sa.update(a).where(a.c.account == account).values(**dialog_values))
            return True

        return await self._run("store dialogs", op)

    async def put_entities(self, account: str, entities: Mapping[int, bytes]) -> None:
        e = self._t.entities
        rows = [
            {"account": account, "peer_id": int(k), "body": bytes(v)} for k, v in entities.items()
        ]
        if not rows:
            return

        async def op(conn: AsyncConnection) -> None:
            for part in chunks(rows):
                await conn.execute(
                    upsert(conn.dialect.name, e, part, update=[("body", take("body"))])
                )

        await self._run("store entities", op)

    async def entities(self, account: str, peer_ids: Iterable[int]) -> dict[int, bytes]:
        e = self._t.entities
        wanted = sorted({int(i) for i in peer_ids})

        async def op(conn: AsyncConnection) -> dict[int, bytes]:
            found: dict[int, bytes] = {}
            for part in chunks(wanted):
                query = sa.select(e.c.peer_id, e.c.body).where(
                    e.c.account == account, e.c.peer_id.in_(part)
                )
                found.update((int(i), bytes(b)) for i, b in await conn.execute(query))
            return found

        return await self._run("read entities", op) if wanted else {}

    async def purge(self, account: str) -> None:
        t = self._t

        async def op(conn: AsyncConnection) -> None:
            row = await self._lock(conn, account)
            for table in (t.messages, t.chats, t.orphans, t.channels, t.dialogs, t.entities):
                await conn.execute(sa.delete(table).where(table.c.account == account))
            # The row stays with a new epoch: tokens handed out before stay stale.
            values = {**ACCOUNT_DEFAULTS, "epoch": int(row.epoch) + 1}
            values["dialog_epoch"] = int(row.dialog_epoch) + 1
            await conn.execute(
                sa.update(t.accounts).where(t.accounts.c.account == account).values(**values)
            )

        await self._run("purge an account", op)


def _span_values(span: Span) -> dict[str, Any]:
    if not math.isfinite(span.anchored_at):
        raise ValueError(f"Span.anchored_at must be finite, got {span.anchored_at!r}")
    return {
        "has_span": 1,
        "low": int(span.low),
        "from_start": int(span.from_start),
        "anchored_at": float(span.anchored_at),
    }
