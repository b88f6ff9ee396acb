"""The core SQLCacheBackend's parts share: its database, tables and transactions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..stores._sql_db import SQLDatabase
from ._sql_ops import chunks, upsert
from ._sql_schema import ACCOUNT_DEFAULTS, CHAT_DEFAULTS, CacheTables

__all__ = ["SQLCore"]

_T = TypeVar("_T")


class SQLCore:
    """What every operation of SQLCacheBackend uses (set by its constructor)."""

    _db: SQLDatabase
    _t: CacheTables
    _display: str

    async def _run(
        self, what: str, op: Callable[[AsyncConnection], Awaitable[_T]], *, single: bool = False
    ) -> _T:
        return await self._db.run(
            f"{what} (message cache)", op, display=self._display, single=single
        )

    async def _lock(self, conn: AsyncConnection, account: str) -> Any:
        """The account's row, made if missing and locked until the transaction ends."""
        a = self._t.accounts
        d = conn.dialect.name
        await conn.execute(upsert(d, a, [{"account": account, **ACCOUNT_DEFAULTS}]))
        query = sa.select(a).where(a.c.account == account).with_for_update()
        return (await conn.execute(query)).one()

    async def _ensure_chats(
        self, conn: AsyncConnection, account: str, chats: Iterable[int]
    ) -> None:
        rows = [{"account": account, "chat_id": c, **CHAT_DEFAULTS} for c in sorted(set(chats))]
        for part in chunks(rows):
            await conn.execute(upsert(conn.dialect.name, self._t.chats, part))

    def _chat_where(self, account: str, chat_id: int) -> Any:
        c = self._t.chats.c
        return sa.and_(c.account == account, c.chat_id == chat_id)
