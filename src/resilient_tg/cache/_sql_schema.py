"""SQLCacheBackend's tables, beside SQLStore's (same database, same ``table_prefix``)::

    <prefix>cache_accounts  account PK; epoch, dialog span (dialog_epoch, d_span, d_low,
                            d_from_start, d_anchored_at), cursor (has_cursor, pts, qts,
                            date, seq, current_at), orphan_seq
    <prefix>cache_messages  (account, chat_id, id) PK; date, edit_date, pts, deleted,
                            ver, body; index (account, id) for deletions by id alone
    <prefix>cache_chats     (account, chat_id) PK; epoch, span (has_span, low,
                            from_start, anchored_at), inbox, outbox, last_read
    <prefix>cache_orphans   (account, id) PK; pts, seq: deleted ids no chat held yet
    <prefix>cache_channels  (account, channel_id) PK; pts: the cursor's channel pts
    <prefix>cache_dialogs   (account, chat_id) PK; top_id, top_date, pinned, body
    <prefix>cache_entities  (account, peer_id) PK; body

``ver`` is `CachedMessage.version` in one BIGINT (`version_key`), so a merge is one
comparison in SQL. The account row is locked by every write of that account, which
orders the writes of racing processes; a span token is "<epoch>.<chat epoch>".
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as sa_mysql

from ..stores._sql_schema import Tables
from ..stores._sql_url import MAX_TEXT

__all__ = ["CacheTables", "add_cache_tables", "version_key"]

_INT31 = 2**31


def version_key(deleted: bool, edit_date: int, pts: int) -> int:
    """`CachedMessage.version` as one integer that orders the same way."""
    if not (0 <= edit_date < _INT31 and 0 <= pts < _INT31):
        raise ValueError(f"edit_date and pts must be in 0..2**31-1, got {edit_date}, {pts}")
    return (int(deleted) << 62) | (edit_date << 31) | pts


@attrs.frozen
class CacheTables:
    accounts: sa.Table
    messages: sa.Table
    chats: sa.Table
    orphans: sa.Table
    channels: sa.Table
    dialogs: sa.Table
    entities: sa.Table


def _blob() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(sa_mysql.LONGBLOB(), "mysql", "mariadb")


def _account() -> sa.Column[str]:
    return sa.Column("account", sa.String(MAX_TEXT), primary_key=True)


def _big(name: str, *, key: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, primary_key=key, autoincrement=False, nullable=False)


def _flag(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.SmallInteger, nullable=False)


def _float(name: str) -> sa.Column[float]:
    return sa.Column(name, sa.Double, nullable=False)


def add_cache_tables(tables: Tables) -> CacheTables:
    """Add the cache's tables to the metadata of SQLStore's (created with them)."""
    prefix, meta = tables.prefix, tables.meta
    name = f"{prefix}cache_accounts"
    if name in meta.tables:
        return CacheTables(*(meta.tables[f"{prefix}cache_{n}"] for n in _NAMES))
    accounts = sa.Table(
        name,
        meta,
        _account(),
        _big("epoch"),
        _big("dialog_epoch"),
        _flag("d_span"),
        _big("d_low"),
        _flag("d_from_start"),
        _float("d_anchored_at"),
        _flag("has_cursor"),
        _big("pts"),
        _big("qts"),
        _big("date"),
        _big("seq"),
        _float("current_at"),
        _big("orphan_seq"),
    )
    messages = sa.Table(
        f"{prefix}cache_messages",
        meta,
        _account(),
        _big("chat_id", key=True),
        _big("id", key=True),
        _big("date"),
        _big("edit_date"),
        _big("pts"),
        _flag("deleted"),
        _big("ver"),
        sa.Column("body", _blob(), nullable=False),
        sa.Index(f"{prefix}cache_messages_by_id", "account", "id"),
    )
    chats = sa.Table(
        f"{prefix}cache_chats",
        meta,
        _account(),
        _big("chat_id", key=True),
        _big("epoch"),
        _flag("has_span"),
        _big("low"),
        _flag("from_start"),
        _float("anchored_at"),
        _big("inbox"),
        _big("outbox"),
        _float("last_read"),
    )
    orphans = sa.Table(
        f"{prefix}cache_orphans",
        meta,
        _account(),
        _big("id", key=True),
        _big("pts"),
        _big("seq"),
        sa.Index(f"{prefix}cache_orphans_by_seq", "account", "seq"),
    )
    channels = sa.Table(
        f"{prefix}cache_channels", meta, _account(), _big("channel_id", key=True), _big("pts")
    )
    dialogs = sa.Table(
        f"{prefix}cache_dialogs",
        meta,
        _account(),
        _big("chat_id", key=True),
        _big("top_id"),
        _big("top_date"),
        _flag("pinned"),
        sa.Column("body", _blob(), nullable=False),
    )
    entities = sa.Table(
        f"{prefix}cache_entities",
        meta,
        _account(),
        _big("peer_id", key=True),
        sa.Column("body", _blob(), nullable=False),
    )
    return CacheTables(accounts, messages, chats, orphans, channels, dialogs, entities)


_NAMES = ("accounts", "messages", "chats", "orphans", "channels", "dialogs", "entities")

#: A new account row (the cache's tables have no server-side defaults).
ACCOUNT_DEFAULTS = {
    "epoch": 0,
    "dialog_epoch": 0,
    "d_span": 0,
    "d_low": 0,
    "d_from_start": 0,
    "d_anchored_at": 0.0,
    "has_cursor": 0,
    "pts": 0,
    "qts": 0,
    "date": 0,
    "seq": 0,
    "current_at": 0.0,
    "orphan_seq": 0,
}

#: A new chat row.
CHAT_DEFAULTS = {
    "epoch": 0,
    "has_span": 0,
    "low": 0,
    "from_start": 0,
    "anchored_at": 0.0,
    "inbox": 0,
    "outbox": 0,
    "last_read": 0.0,
}
