"""RedisCacheBackend: the message cache in Redis, shared by every process of a fleet.

Needs the ``redis`` extra (``pip install 'resilient-tg[redis]'``). Every merge is one
Lua script (`._redis_scripts`, run by EVALSHA and loaded again if Redis forgot it), so
two processes writing the same chat keep the rules of `CacheBackend` without locks.
Keys start with ``<prefix>:<account>:`` (``:`` and ``%`` in the account escaped), one
sorted set per chat keeps the live message ids for history. A single Redis (or one
behind Sentinel): the scripts touch keys they compute, which Redis Cluster refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "RedisCacheBackend needs redis (redis.asyncio): pip install 'resilient-tg[redis]'"
    ) from exc

from ._backend import (
    ORPHAN_TOMBSTONES,
    CacheBackend,
    CachedDialog,
    CachedMessage,
    ChatUsage,
    Cursor,
    HistoryRead,
    ReadMarks,
    Span,
    SpanState,
)
from ._redis_scripts import SCRIPTS

__all__ = ["RedisCacheBackend"]

# Messages per script call: bounds a script's run time (Redis blocks while it runs).
_BATCH = 500


class RedisCacheBackend(CacheBackend):
    """The cache in Redis under ``prefix``; see the module docs.

    ``url`` is a ``redis://`` or ``rediss://`` URL, or an existing
    ``redis.asyncio.Redis`` client (made with ``decode_responses=False``; `aclose` then
    leaves it open). Nothing connects until first use.
    """

    def __init__(self, url: str | aioredis.Redis, *, prefix: str = "resilient_tg:cache") -> None:
        if not prefix or any(ch in prefix for ch in "\r\n "):
            raise ValueError(f"RedisCacheBackend prefix must be non-empty, no spaces: {prefix!r}")
        self.prefix = prefix
        if isinstance(url, str):
            self._redis = aioredis.Redis.from_url(url)  # connects lazily
            self._owns_client = True
            self._display = f"{_without_password(url)}#{prefix}"
        else:
            kwargs = url.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ValueError("RedisCacheBackend needs a client with decode_responses=False")
            self._redis = url
            self._owns_client = False
            where = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            self._display = f"{where}/{kwargs.get('db', 0)}#{prefix}"
        self._registry = f"{prefix}:accounts"
        self._scripts = {name: self._redis.register_script(body) for name, body in SCRIPTS.items()}

    def __repr__(self) -> str:
        return f"<RedisCacheBackend {self._display}>"

    def describe(self) -> str:
        """The URL without password, then ``#prefix``."""
        return self._display

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    def _base(self, account: str) -> str:
        escaped = account.replace("%", "%25").replace(":", "%3A")
        return f"{self.prefix}:{escaped}"

    async def _run(self, name: str, account: str, *args: Any) -> Any:
        return await self._scripts[name](
            keys=[self._base(account), self._registry], args=[account, *args]
        )

    # -- messages ----------------------------------------------------------------------

    async def put_messages(self, account: str, messages: Sequence[CachedMessage]) -> None:
        merged: dict[tuple[int, int], CachedMessage] = {}
        for m in messages:  # one id twice in a batch: the newer (the first on a tie)
            old = merged.get((m.chat_id, m.id))
            if old is None or m.version > old.version:
                merged[(m.chat_id, m.id)] = m
        batch = list(merged.values())
        for start in range(0, len(batch), _BATCH):
            args: list[Any] = []
            for m in batch[start : start + _BATCH]:
                args += [int(m.chat_id), int(m.id), int(m.deleted), int(m.edit_date)]
                args += [int(m.pts), int(m.date), b"" if m.deleted else bytes(m.body)]
            await self._run("put", account, *args)

    async def delete_ids(self, account: str, ids: Iterable[int], pts: int = 0) -> list[int]:
        wanted = [int(i) for i in ids]
        held: set[int] = set()
        for start in range(0, len(wanted), _BATCH * 4):
            chunk = wanted[start : start + _BATCH * 4]
            found = await self._run("delete", account, int(pts), ORPHAN_TOMBSTONES, *chunk)
            held.update(int(c) for c in found)
        return sorted(held)

    async def get_message(
        self, account: str, chat_id: int, message_id: int
    ) -> CachedMessage | None:
        key = f"{self._base(account)}:c:{int(chat_id)}:m"
        value = await self._redis.hget(key, str(int(message_id)))
        return None if value is None else _message(chat_id, message_id, _bytes(value))

    async def history(
        self, account: str, chat_id: int, *, below: int | None, limit: int
    ) -> list[CachedMessage]:
        if limit <= 0:
            return []
        top = "+inf" if below is None else f"({int(below)}"
        found = await self._run("history", account, int(chat_id), top, int(limit))
        return [_message(chat_id, int(found[i]), found[i + 1]) for i in range(0, len(found), 2)]

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
        """One script: span, messages, entities and the touch in one atomic snapshot."""
        top = "+inf" if below is None else f"({int(below)}"
        when = "" if touch is None else repr(float(touch))
        wanted = sorted({int(p) for p in peers})
        extra, wanted = wanted[_BATCH:], wanted[:_BATCH]  # Lua's unpack() has a limit
        args = [int(chat_id), top, max(0, int(limit)), when, *wanted]
        span, found, entities = await self._run("read_history", account, *args)
        if limit <= 0:
            found = []
        messages = [_message(chat_id, int(found[i]), found[i + 1]) for i in range(0, len(found), 2)]
        stored = {int(entities[i]): _bytes(entities[i + 1]) for i in range(0, len(entities), 2)}
        if extra:
            stored.update(await self.entities(account, extra))
        return HistoryRead(_span_state(span), messages, stored)

    async def trim(self, account: str, chat_id: int, keep: int) -> int:
        return int(await self._run("trim", account, int(chat_id), max(0, int(keep))))

    # -- spans -------------------------------------------------------------------------

    async def span(self, account: str, chat_id: int) -> SpanState:
        found = await self._run("span", account, int(chat_id))
        return _span_state(found)

    async def set_span(self, account: str, chat_id: int, span: Span, token: str) -> bool:
        done = await self._run("set_span", account, int(chat_id), token, *_span_args(span))
        return bool(done)

    async def end_spans(self, account: str, chat_ids: Iterable[int] | None = None) -> None:
        if chat_ids is None:
            await self._run("end_spans", account, "all")
        else:
            await self._run("end_spans", account, "some", *(int(c) for c in chat_ids))

    # -- per-chat state ----------------------------------------------------------------

    async def read_marks(self, account: str, chat_id: int) -> ReadMarks:
        key = f"{self._base(account)}:c:{int(chat_id)}:s"
        inbox, outbox = await self._redis.hmget(key, ["mi", "mo"])
        return ReadMarks(int(inbox or 0), int(outbox or 0))

    async def mark_read(
        self, account: str, chat_id: int, *, inbox_max_id: int = 0, outbox_max_id: int = 0
    ) -> None:
        await self._run(
            "forward", account, int(chat_id), "mi", int(inbox_max_id), "mo", int(outbox_max_id)
        )

    async def chats(self, account: str) -> list[int]:
        found = await self._run("chats", account)
        return sorted(int(found[i]) for i in range(0, len(found), 3))

    async def drop_chat(self, account: str, chat_id: int) -> None:
        await self._run("drop_chat", account, int(chat_id))

    async def touch(self, account: str, chat_id: int, when: float) -> None:
        await self._run("forward", account, int(chat_id), "lr", repr(float(when)))

    async def usage(self) -> list[ChatUsage]:
        out: list[ChatUsage] = []
        for raw in await self._redis.smembers(self._registry):
            account = _bytes(raw).decode()
            found = await self._run("chats", account)
            out += [
                ChatUsage(account, int(found[i]), int(found[i + 1]), float(found[i + 2]))
                for i in range(0, len(found), 3)
            ]
        return out

    # -- account state -----------------------------------------------------------------

    async def cursor(self, account: str) -> Cursor | None:
        base = self._base(account)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(f"{base}:cur")
            pipe.hgetall(f"{base}:cur:ch")
            common, channels = await pipe.execute()
        if not common:
            return None
        return Cursor(
            pts=int(common.get(b"pts", 0)),
            qts=int(common.get(b"qts", 0)),
            date=int(common.get(b"date", 0)),
            seq=int(common.get(b"seq", 0)),
            channels={int(k): int(v) for k, v in channels.items()},
            current_at=float(common.get(b"at", 0)),
        )

    async def set_cursor(self, account: str, cursor: Cursor) -> None:
        channels: list[int] = []
        for channel_id, pts in cursor.channels.items():
            channels += [int(channel_id), int(pts)]
        await self._run(
            "set_cursor",
            account,
            int(cursor.pts),
            int(cursor.qts),
            int(cursor.date),
            int(cursor.seq),
            repr(float(cursor.current_at)),
            *channels,
        )

    async def dialogs(self, account: str) -> tuple[list[CachedDialog], SpanState]:
        found = await self._run("dialogs", account)
        pairs = found[5]
        dialogs = [_dialog(int(pairs[i]), pairs[i + 1]) for i in range(0, len(pairs), 2)]
        dialogs.sort(key=lambda d: (d.pinned, d.top_date, d.top_id), reverse=True)
        return dialogs, _span_state(found[:5])

    async def put_dialogs(
        self, account: str, dialogs: Sequence[CachedDialog], *, span: Span | None, token: str | None
    ) -> bool:
        args: list[Any] = []
        if span is not None and token is not None:
            args += [token, *_span_args(span)]
        else:
            args += ["", 0, 0, 0]
        for d in dialogs:
            head = f"{int(d.top_id)}.{int(d.top_date)}.{int(d.pinned)}|".encode()
            args += [int(d.chat_id), int(d.top_id), head, bytes(d.body)]
        return bool(await self._run("put_dialogs", account, *args))

    async def put_entities(self, account: str, entities: Mapping[int, bytes]) -> None:
        if entities:
            mapping: dict[str | bytes, bytes] = {str(int(k)): bytes(v) for k, v in entities.items()}
            await self._redis.hset(f"{self._base(account)}:ent", mapping=mapping)  # type: ignore[arg-type]

    async def entities(self, account: str, peer_ids: Iterable[int]) -> dict[int, bytes]:
        wanted = [int(i) for i in peer_ids]
        if not wanted:
            return {}
        key = f"{self._base(account)}:ent"
        values = await self._redis.hmget(key, [str(i) for i in wanted])
        return {i: _bytes(v) for i, v in zip(wanted, values, strict=True) if v is not None}

    async def purge(self, account: str) -> None:
        await self._run("purge", account)


def _bytes(value: bytes | str) -> bytes:
    # The client may have been made with decode_responses=True; ours never is.
    return value.encode() if isinstance(value, str) else value


def _message(chat_id: int, message_id: int, value: bytes) -> CachedMessage:
    head, _, body = value.partition(b"|")
    deleted, edit_date, pts, date = (int(x) for x in head.split(b".", 3))
    return CachedMessage(
        chat_id=int(chat_id),
        id=int(message_id),
        date=date,
        edit_date=edit_date,
        pts=pts,
        deleted=bool(deleted),
        body=body,
    )


def _dialog(chat_id: int, value: bytes) -> CachedDialog:
    head, _, body = value.partition(b"|")
    top_id, top_date, pinned = (int(x) for x in head.split(b".", 2))
    return CachedDialog(chat_id, top_id, top_date, pinned=bool(pinned), body=body)


def _span_args(span: Span) -> list[Any]:
    if not math.isfinite(span.anchored_at):
        raise ValueError(f"Span.anchored_at must be finite, got {span.anchored_at!r}")
    return [int(span.low), int(span.from_start), repr(float(span.anchored_at))]


def _span_state(found: Sequence[Any]) -> SpanState:
    token = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
    if int(found[1]) != 1:
        return SpanState(None, token)
    span = Span(low=int(found[2]), from_start=int(found[3]) == 1, anchored_at=float(found[4]))
    return SpanState(span, token)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
