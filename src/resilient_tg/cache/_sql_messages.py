"""SQLCacheBackend's messages: merged by version in SQL, deleted by id, trimmed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ._backend import ORPHAN_TOMBSTONES, CachedMessage, is_channel
from ._sql_core import SQLCore
from ._sql_ops import chunks, greatest, take, upsert
from ._sql_schema import version_key

__all__ = ["SQLMessages"]

_CHANNEL_MAX = -1_000_000_000_000  # chat ids <= this are channels (see is_channel)
_MESSAGE_COLUMNS = ("date", "edit_date", "pts", "deleted", "body", "ver")


class SQLMessages(SQLCore):
    """The message half of SQLCacheBackend."""

    # -- messages ----------------------------------------------------------------------

    async def put_messages(self, account: str, messages: Sequence[CachedMessage]) -> None:
        merged: dict[tuple[int, int], CachedMessage] = {}
        for m in messages:  # one id twice in a batch: the newer (the first on a tie)
            old = merged.get((m.chat_id, m.id))
            if old is None or m.version > old.version:
                merged[(m.chat_id, m.id)] = m
        if not merged:
            return
        batch = list(merged.values())
        for m in batch:
            version_key(m.deleted, m.edit_date, m.pts)  # ValueError before any I/O
        t, o = self._t.messages, self._t.orphans

        async def op(conn: AsyncConnection) -> None:
            await self._lock(conn, account)
            d = conn.dialect.name
            plain = sorted({m.id for m in batch if not is_channel(m.chat_id)})
            orphans: dict[int, int] = {}
            for ids in chunks(plain):
                where = sa.and_(o.c.account == account, o.c.id.in_(ids))
                found = await conn.execute(sa.select(o.c.id, o.c.pts).where(where))
                orphans.update((int(i), int(p)) for i, p in found)
                await conn.execute(sa.delete(o).where(where))
            rows = []
            for m in batch:
                if not is_channel(m.chat_id) and m.id in orphans:
                    m = m.tombstone(orphans[m.id])
                rows.append(_message_row(account, m))
            update = [(c, take(c)) for c in _MESSAGE_COLUMNS]
            for part in chunks(rows):
                await conn.execute(
                    upsert(d, t, part, update=update, newer=lambda new, old: new.ver > old.ver)
                )

        await self._run("store messages", op)

    async def delete_ids(self, account: str, ids: Iterable[int], pts: int = 0) -> list[int]:
        wanted = list(dict.fromkeys(int(i) for i in ids))
        t = self._t.messages

        async def op(conn: AsyncConnection) -> list[int]:
            if not wanted:
                return []
            row = await self._lock(conn, account)
            held: set[int] = set()
            found_ids: set[int] = set()
            for part in chunks(wanted):
                query = sa.select(t.c.chat_id, t.c.id, t.c.edit_date, t.c.pts, t.c.deleted).where(
                    t.c.account == account, t.c.id.in_(part), t.c.chat_id > _CHANNEL_MAX
                )
                changes = []
                for chat_id, message_id, edit_date, old_pts, deleted in await conn.execute(query):
                    held.add(int(chat_id))
                    found_ids.add(int(message_id))
                    if not deleted:
                        new_pts = max(int(old_pts), int(pts))
                        changes.append(
                            {
                                "k_chat": chat_id,
                                "k_id": message_id,
                                "pts": new_pts,
                                "ver": version_key(True, int(edit_date), new_pts),
                            }
                        )
                if changes:
                    stmt = (
                        sa.update(t)
                        .where(
                            t.c.account == account,
                            t.c.chat_id == sa.bindparam("k_chat"),
                            t.c.id == sa.bindparam("k_id"),
                        )
                        .values(
                            deleted=1, body=b"", pts=sa.bindparam("pts"), ver=sa.bindparam("ver")
                        )
                    )
                    await conn.execute(stmt, changes)
            orphan_ids = [i for i in wanted if i not in found_ids]
            if orphan_ids:
                await self._remember_orphans(conn, account, row, orphan_ids, int(pts))
            return sorted(held)

        return await self._run("delete messages", op)

    async def _remember_orphans(
        self, conn: AsyncConnection, account: str, row: Any, ids: list[int], pts: int
    ) -> None:
        a, o = self._t.accounts, self._t.orphans
        seq = int(row.orphan_seq)
        rows = [
            {"account": account, "id": i, "pts": pts, "seq": seq + n + 1} for n, i in enumerate(ids)
        ]
        seq += len(ids)
        for part in chunks(rows):
            stmt = upsert(
                conn.dialect.name, o, part, update=[("pts", take("pts")), ("seq", take("seq"))]
            )
            await conn.execute(stmt)
        await conn.execute(sa.update(a).where(a.c.account == account).values(orphan_seq=seq))
        # Keep the newest ORPHAN_TOMBSTONES (fewer when some were used up: seqs have holes).
        await conn.execute(
            sa.delete(o).where(o.c.account == account, o.c.seq <= seq - ORPHAN_TOMBSTONES)
        )

    async def get_message(
        self, account: str, chat_id: int, message_id: int
    ) -> CachedMessage | None:
        t = self._t.messages

        async def op(conn: AsyncConnection) -> CachedMessage | None:
            query = sa.select(t).where(
                t.c.account == account, t.c.chat_id == chat_id, t.c.id == message_id
            )
            row = (await conn.execute(query)).one_or_none()
            return None if row is None else _message(row)

        return await self._run("read a message", op)

    async def history(
        self, account: str, chat_id: int, *, below: int | None, limit: int
    ) -> list[CachedMessage]:
        if limit <= 0:
            return []
        t = self._t.messages

        async def op(conn: AsyncConnection) -> list[CachedMessage]:
            query = sa.select(t).where(
                t.c.account == account, t.c.chat_id == chat_id, t.c.deleted == 0
            )
            if below is not None:
                query = query.where(t.c.id < below)
            query = query.order_by(t.c.id.desc()).limit(limit)
            return [_message(row) for row in await conn.execute(query)]

        return await self._run("read history", op)

    async def trim(self, account: str, chat_id: int, keep: int) -> int:
        t, c = self._t.messages, self._t.chats
        keep = max(0, int(keep))

        async def op(conn: AsyncConnection) -> int:
            await self._lock(conn, account)
            live = sa.and_(t.c.account == account, t.c.chat_id == chat_id, t.c.deleted == 0)
            count = int(await conn.scalar(sa.select(sa.func.count()).where(live)) or 0)
            if count <= keep:
                return 0
            ordered = sa.select(t.c.id).where(live).order_by(t.c.id.desc())
            if keep > 0:
                floor = int(await conn.scalar(ordered.offset(keep - 1).limit(1)) or 0)
            else:
                floor = int(await conn.scalar(ordered.limit(1)) or 0) + 1
            await conn.execute(
                sa.delete(t).where(t.c.account == account, t.c.chat_id == chat_id, t.c.id < floor)
            )
            d = conn.dialect.name
            await conn.execute(
                sa.update(c)
                .where(self._chat_where(account, chat_id), c.c.has_span == 1)
                .values(low=greatest(d, c.c.low, floor), from_start=0)
            )
            return count - keep

        return await self._run("trim a chat", op)


def _message_row(account: str, m: CachedMessage) -> dict[str, Any]:
    return {
        "account": account,
        "chat_id": int(m.chat_id),
        "id": int(m.id),
        "date": int(m.date),
        "edit_date": int(m.edit_date),
        "pts": int(m.pts),
        "deleted": int(m.deleted),
        "ver": version_key(m.deleted, m.edit_date, m.pts),
        "body": b"" if m.deleted else bytes(m.body),
    }


def _message(row: Any) -> CachedMessage:
    return CachedMessage(
        chat_id=int(row.chat_id),
        id=int(row.id),
        date=int(row.date),
        edit_date=int(row.edit_date),
        pts=int(row.pts),
        deleted=bool(row.deleted),
        body=bytes(row.body),
    )
