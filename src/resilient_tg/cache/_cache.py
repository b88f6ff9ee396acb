"""MessageCache: recent messages per account and chat, kept gap-free by updates.

**Complete** (the same definition as in docs/cache.md): per account and chat, the cache
holds a *span*, ``Span.low`` and up, of message ids; it is anchored by a getHistory answer
taken while the client was CONNECTED (with the span token read before the request was
sent, so that a break in between makes `CacheBackend.set_span` refuse it) and extended by
every update applied since. Anything that can break that chain ends the span: a "too
long" difference (a channel's; the account's differenceTooLong ends every span of the
account), a channel Telethon stops following, an own sent message the cache cannot
fetch, and a start whose persisted update state (the session's pts and channel pts) is
ahead of the cache's `Cursor` or unknown to it (updates in between never reached the
cache). Reads inside a span are answered from the cache; reads outside go to Telegram.

Writes come from Telethon's message box through `_compat.set_update_feed`: every update
it applies, in the order it applies them (pts order, the catch-up after each reconnect
included), is queued and written by one task (`UpdateWriter`). The `Cursor` is written
only when that queue is empty, from the box's state at that moment, so it never claims an
update the cache has not written; the session's stored update state waits for the same
queue (its ``update_state_gate``), so a restart does not skip what the cache missed.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import anyio
from telethon import utils

from .. import _compat
from .._errors import StaleCacheError
from .._flag import Flag
from .._state import ConnectionState, StateChange
from ..stores._encryption import resolve_key
from ._answer import CacheAnswer, DialogEntry, Source
from ._backend import CacheBackend, ReadMarks, is_channel
from ._bounds import Bounds, enforce
from ._codec import Codec, peer_ids_of, timestamp
from ._cursor import box_cursor, loaded_state, restart_breaks
from ._fetch import (
    HISTORY_PAGE,
    HistoryFetch,
    anchored_span,
    chat_id_of,
    covers,
    fetch_dialogs,
    fetch_message,
    sorted_dialogs,
)
from ._host import CacheHost
from ._writer import UpdateWriter

__all__ = ["MessageCache"]

log = logging.getLogger("resilient_tg.cache")

_SETTLE = 2.0  # how long a read waits for queued updates to be written first
_MAINTAIN_EVERY = 30.0  # seconds between bound checks (also after _TRIM_AFTER writes)
_TRIM_AFTER = 200


class MessageCache:
    """Recent messages of one client's account, kept current by its updates.

    ``MessageCache(client, backend)`` attaches itself as ``client.cache``; create it
    before entering the client (``async with client``), which starts it. Reads:
    `history`, `get`, `dialogs`, each a `CacheAnswer` saying where it came from and how
    fresh it is. Options: ``account`` (default: the logged-in user's id as text),
    ``per_chat`` newest messages kept per chat, ``max_messages`` per account (least
    recently read chats go first), ``idle_ttl`` (drop chats nobody read for that long),
    ``retention`` (drop messages older than that, seconds), ``key``/``key_env``
    (encrypt bodies, as the stores do; needs the ``crypto`` extra).
    """

    def __init__(
        self,
        client: CacheHost,
        backend: CacheBackend,
        *,
        account: str | None = None,
        per_chat: int = 1000,
        max_messages: int = 100_000,
        idle_ttl: float | None = None,
        retention: float | None = None,
        key: bytes | str | None = None,
        key_env: str | None = None,
    ) -> None:
        if not isinstance(backend, CacheBackend):
            raise TypeError(f"backend must be a CacheBackend, got {type(backend).__name__}")
        if per_chat < 1 or max_messages < 1:
            raise ValueError("per_chat and max_messages must be at least 1")
        for name, value in (("idle_ttl", idle_ttl), ("retention", retention)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive seconds or None")
        if account is not None and not account:
            raise ValueError("account must be a non-empty name or None")
        if getattr(client, "cache", None) is not None:
            raise ValueError("this client already has a MessageCache")
        if client._telegram is not None:
            raise RuntimeError("create the MessageCache before entering the client")
        self._client = client
        self._backend = backend
        self._account = account
        self.bounds = Bounds(per_chat, max_messages, idle_ttl, retention)
        self._key = resolve_key(key, key_env)
        self._codec: Codec | None = None
        self._writer: UpdateWriter | None = None
        self._feed: collections.deque[tuple[Any, Any, Any, int]] = collections.deque()
        self._wake = Flag()
        self._idle = Flag()
        self._idle.set()
        self._applying = False
        self._epoch = 0  # local breaks: a fetch started before one must not anchor
        self._pinned: dict[int, bool] = {}
        self._loaded: tuple[int, dict[int, int]] | None = None  # session state at start
        self._current_at = 0.0
        self._started_at = time.time()
        self._last_maintain = time.monotonic()
        self._purged = False
        self._ready_lock = anyio.Lock()
        self._broken = False  # a write failed: spans end before the cursor moves again
        client.cache = self
        client.on_auth_lost(self._on_auth_lost)
        client.on_state_change(self._on_state_change)

    def __repr__(self) -> str:
        return f"<MessageCache account={self._account!r} backend={self._backend.describe()}>"

    @property
    def account(self) -> str | None:
        """The account the cache keys everything by (None until known)."""
        return self._account

    @property
    def backend(self) -> CacheBackend:
        return self._backend

    # Reads ------------------------------------------------------------------------------

    async def history(
        self, chat: Any, *, limit: int = 20, offset_id: int = 0, fresh: bool = False
    ) -> CacheAnswer[list[Any]]:
        """The newest ``limit`` (1-100) messages of ``chat`` below ``offset_id`` (0: the
        newest), newest first, as Telethon messages: from the cache when a span proves the
        range complete, else from Telegram (stored). While not CONNECTED: the cache's
        messages marked stale, or `StaleCacheError` with ``fresh=True``."""
        if not 1 <= limit <= HISTORY_PAGE:
            raise ValueError(f"limit must be 1-{HISTORY_PAGE}, got {limit}")
        if offset_id < 0:
            raise ValueError("offset_id must be 0 (the newest) or a message id")
        chat_id = chat_id_of(chat)
        account = await self._ready()
        below = offset_id or None
        if not self._connected():
            self._refuse_if_fresh(fresh)
            records = await self._backend.history(account, chat_id, below=below, limit=limit)
            span = (await self._backend.span(account, chat_id)).span
            whole = span is not None and covers(span, records, limit)
            return self._stale(await self._decode(account, records), whole)
        settled = await self._settle()
        state = await self._backend.span(account, chat_id)
        records = await self._backend.history(account, chat_id, below=below, limit=limit)
        if settled and state.span is not None and covers(state.span, records, limit):
            await self._backend.touch(account, chat_id, time.time())
            return self._current(await self._decode(account, records), Source.CACHE)
        telegram = self._client.telegram
        epoch = self._epoch
        fetch = HistoryFetch(
            self._backend, account, self._codec_(), chat_id, offset_id, HISTORY_PAGE
        )
        await fetch.run(telegram, await self._input_peer(account, chat_id))
        if self._connected() and epoch == self._epoch:
            span = anchored_span(fetch, state, time.time())
            if span is not None:
                await self._backend.set_span(account, chat_id, span, state.token)
        await self._backend.touch(account, chat_id, time.time())
        if len(fetch.messages) > self.bounds.per_chat:
            await self._backend.trim(account, chat_id, self.bounds.per_chat)
        return self._current(fetch.messages[:limit], Source.TELEGRAM)

    async def get(self, chat: Any, message_id: int, *, fresh: bool = False) -> CacheAnswer[Any]:
        """Message ``message_id`` of ``chat`` (None if it does not exist or was deleted)."""
        chat_id = chat_id_of(chat)
        account = await self._ready()
        if not self._connected():
            self._refuse_if_fresh(fresh)
            record = await self._backend.get_message(account, chat_id, message_id)
            span = (await self._backend.span(account, chat_id)).span
            inside = span is not None and (span.from_start or message_id >= span.low)
            live = [record] if record is not None and not record.deleted else []
            decoded = await self._decode(account, live)
            return self._stale(decoded[0] if decoded else None, inside or record is not None)
        settled = await self._settle()
        span = (await self._backend.span(account, chat_id)).span if settled else None
        if span is not None and (span.from_start or message_id >= span.low):
            record = await self._backend.get_message(account, chat_id, message_id)
            await self._backend.touch(account, chat_id, time.time())
            live = [record] if record is not None and not record.deleted else []
            decoded = await self._decode(account, live)
            return self._current(decoded[0] if decoded else None, Source.CACHE)
        found = await fetch_message(
            self._client.telegram, self._backend, account, self._codec_(), chat_id, message_id
        )
        return self._current(found, Source.TELEGRAM)

    async def dialogs(
        self, limit: int = 20, *, fresh: bool = False
    ) -> CacheAnswer[list[DialogEntry]]:
        """The account's ``limit`` (1-100) most recent dialogs, pinned first: from the
        cache once a getDialogs answer taken while CONNECTED held every dialog (kept
        current by new messages since), else from Telegram."""
        if not 1 <= limit <= HISTORY_PAGE:
            raise ValueError(f"limit must be 1-{HISTORY_PAGE}, got {limit}")
        account = await self._ready()
        connected = self._connected()
        if not connected:
            self._refuse_if_fresh(fresh)
        settled = connected and await self._settle()
        cached, state = await self._backend.dialogs(account)
        whole = (settled or not connected) and state.span is not None and state.span.from_start
        if whole or not connected:
            entries = []
            for dialog in cached[:limit]:
                top = await self._backend.history(account, dialog.chat_id, below=None, limit=1)
                decoded = await self._decode(account, top)
                entity = await self._entity(account, dialog.chat_id)
                message = decoded[0] if decoded else None
                entries.append(
                    DialogEntry(
                        dialog.chat_id,
                        message.id if message is not None else dialog.top_id,
                        timestamp(message.date) if message is not None else dialog.top_date,
                        dialog.pinned,
                        entity,
                        message,
                    )
                )
            if not connected:
                return self._stale(entries, whole)
            return self._current(entries, Source.CACHE)
        found = await fetch_dialogs(
            self._client.telegram,
            self._backend,
            account,
            self._codec_(),
            self._pinned,
            state,
            anchor=self._connected(),
        )
        entries = [
            DialogEntry(d.chat_id, d.top_id, d.top_date, d.pinned, entity, top)
            for d, entity, top in sorted_dialogs(found)[:limit]
        ]
        return self._current(entries, Source.TELEGRAM)

    async def read_marks(self, chat: Any) -> ReadMarks:
        """The chat's read receipts as the updates told them (zeros when unknown)."""
        return await self._backend.read_marks(await self._ready(), chat_id_of(chat))

    async def maintain(self) -> int:
        """Apply the bounds now (they also run by themselves); how many messages went."""
        self._last_maintain = time.monotonic()
        if self._account is None:
            return 0
        return await enforce(self._backend, self._account, self.bounds, started_at=self._started_at)

    async def purge(self) -> None:
        """Forget everything cached for this account (also done on logout and AUTH_LOST)."""
        self._epoch += 1
        self._feed.clear()
        if self._account is not None:
            await self._backend.purge(self._account)
            log.info("cache of account %s purged", self._account)

    # Lifecycle (called by ResilientClient) --------------------------------------------------

    async def _start(self) -> None:
        """Entering the client: hook the update feed and the session's state gate, note
        the session's update state, start the writer task."""
        client = self._client
        telegram = client.telegram
        session = client._session
        assert session is not None
        if self._account is None and session.self_id is not None:
            self._account = str(session.self_id)
        self._loaded = loaded_state(session)
        _compat.set_update_feed(telegram, self._on_update)
        gate = session.update_state_gate
        session.update_state_gate = lambda: self._idle.is_set() and (gate is None or gate())
        client._spawn("cache", self._run)

    async def _quiesce(self, limit: float) -> None:
        """Leaving: write what is queued (bounded), and the cursor if all of it was."""
        with anyio.move_on_after(limit):
            await self._idle.wait()
        if not self._idle.is_set():
            log.info("cache: %d update(s) not written on the way out", len(self._feed))

    async def _close(self) -> None:
        """After the client's tasks ended: purge after a logout, unhook the feed."""
        session = self._client._session
        if self._client._telegram is not None:
            _compat.set_update_feed(self._client._telegram, None)
        if session is not None and session.logged_out and not self._purged:
            self._purged = True
            try:
                await self.purge()
            except Exception as exc:  # noqa: BLE001 - reported; the client still closes
                log.warning("cache: purge after log out failed: %s", exc)

    def _on_update(self, update: Any, users: Any, chats: Any, pts: int) -> None:
        self._feed.append((update, users, chats, pts))
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        """The writer task: write what the box fed, in order; never dies of a failure (a
        feed nobody writes would hold the session's update state back for good)."""
        while True:
            if not self._feed:
                self._idle.set()
                try:
                    await self._maybe_maintain()
                except Exception as exc:  # noqa: BLE001 - retried at the next interval
                    log.warning("cache: applying the bounds failed: %s", exc)
                with anyio.move_on_after(_MAINTAIN_EVERY):
                    await self._wake.wait()
                self._wake.clear()
                continue
            try:
                writer = await self._writer_()
            except Exception as exc:  # noqa: BLE001 - e.g. no link for get_me: retry
                log.info("cache: cannot start writing yet (%s); retrying", exc)
                await anyio.sleep(1.0)
                continue
            entries = list(self._feed)
            try:
                await writer.apply(entries)
                await self._trim(writer)
            except Exception as exc:  # noqa: BLE001 - the backend failed: see _broken
                if not self._broken:
                    log.warning(
                        "cache: writing updates to %s failed (%s); the account's spans end",
                        self._backend.describe(),
                        exc,
                    )
                self._broken = True
                self._epoch += 1
            for _ in entries:
                self._feed.popleft()
            try:
                await self._write_cursor()
            except Exception as exc:  # noqa: BLE001 - the next batch writes it
                log.info("cache: writing the cursor failed: %s", exc)

    async def _trim(self, writer: UpdateWriter) -> None:
        """Keep the chats that got many messages at ``per_chat`` (cheaper than `maintain`)."""
        if sum(writer.written.values()) < _TRIM_AFTER or self._account is None:
            return
        for chat_id in [c for c, n in writer.written.items() if n]:
            await self._backend.trim(self._account, chat_id, self.bounds.per_chat)
        writer.written.clear()

    async def _maybe_maintain(self) -> None:
        if time.monotonic() - self._last_maintain >= _MAINTAIN_EVERY:
            await self.maintain()

    async def _write_cursor(self) -> None:
        if self._feed or self._account is None:
            return
        if self._broken:
            try:
                await self._backend.end_spans(self._account, None)
            except Exception:  # noqa: BLE001 - still broken: the cursor stays where it was
                return
            self._broken = False
        if self._connected():
            self._current_at = time.time()
        cursor = box_cursor(self._client.telegram, self._current_at)
        if cursor is None:
            return
        if not self._feed:  # nothing applied meanwhile by the box the cache has not written
            await self._backend.set_cursor(self._account, cursor)

    async def _writer_(self) -> UpdateWriter:
        """The writer, once the account is known (checking the restart on first use)."""
        if self._writer is None:
            account = await self._ready()
            self._writer = UpdateWriter(
                self._backend, account, self._codec_(), self._own_fetch, self._break, self._pinned
            )
        return self._writer

    async def _own_fetch(self, request: Any) -> Any:
        return await self._client.telegram(request)

    def _break(self) -> None:
        self._epoch += 1

    async def _ready(self) -> str:
        """The account name; on first use, end the spans a restart may have broken."""
        if self._codec is not None and self._account is not None:
            return self._account
        async with self._ready_lock:  # one restart check, however many callers
            if self._account is None:
                me = await self._client.telegram.get_me(input_peer=True)
                if me is None:
                    raise RuntimeError(
                        "the cache's account is unknown: the client is not logged in"
                    )
                self._account = str(me.user_id)
            if self._codec is None:
                await self._check_restart(self._account)
                self._codec = Codec(self._account, self._key, self._backend.describe())
        return self._account

    async def _check_restart(self, account: str) -> None:
        """End the spans whose updates may have passed while the cache was not written:
        the session's persisted state at start is ahead of the cache's cursor."""
        cursor = await self._backend.cursor(account)
        breaks = restart_breaks(cursor, self._loaded)
        if cursor is None or breaks is None:
            self._epoch += 1
            await self._backend.end_spans(account, None)
            log.info("cache of account %s: no cursor to resume from; spans ended", account)
            return
        account_broke, ended = breaks
        if account_broke:
            ended += [c for c in await self._backend.chats(account) if not is_channel(c)]
        if ended:
            self._epoch += 1
            await self._backend.end_spans(account, ended)
            log.info("cache of account %s: %d span(s) ended on restart", account, len(ended))
        self._current_at = cursor.current_at

    # Helpers ----------------------------------------------------------------------------

    def _codec_(self) -> Codec:
        assert self._codec is not None
        return self._codec

    def _connected(self) -> bool:
        return self._client.state is ConnectionState.CONNECTED

    async def _settle(self) -> bool:
        """Let queued updates be written first, so a read sees what the client has seen.
        False when they were not written in time: the cache cannot answer as current."""
        if not self._idle.is_set():
            with anyio.move_on_after(_SETTLE):
                await self._idle.wait()
        return self._idle.is_set() and not self._broken

    def _refuse_if_fresh(self, fresh: bool) -> None:
        if fresh:
            state = self._client.state.value
            raise StaleCacheError(
                f"fresh data was asked for, but the client is {state}: the cache cannot "
                f"prove itself current (last current at {self._current_at:.0f})",
                state=state,
                as_of=self._current_at,
            )

    def _current(self, value: Any, source: Source) -> CacheAnswer[Any]:
        self._current_at = time.time()
        return CacheAnswer(value, source, stale=False, as_of=self._current_at)

    def _stale(self, value: Any, complete: bool) -> CacheAnswer[Any]:
        return CacheAnswer(value, Source.CACHE, True, self._current_at, complete)

    async def _decode(self, account: str, records: list[Any]) -> list[Any]:
        codec = self._codec_()
        wanted: set[int] = set()
        for record in records:
            wanted.add(record.chat_id)
        stored = await self._backend.entities(account, wanted)
        messages = []
        for record in records:
            message = codec.message(record, stored, self._client.telegram)
            more = peer_ids_of(message) - stored.keys()
            if more:
                stored.update(await self._backend.entities(account, more))
                message = codec.message(record, stored, self._client.telegram)
            messages.append(message)
        return messages

    async def _input_peer(self, account: str, chat_id: int) -> Any:
        """Telethon's input peer for a chat; the cached entity when Telethon knows none."""
        try:
            return await self._client.telegram.get_input_entity(chat_id)
        except ValueError:
            entity = await self._entity(account, chat_id)
            if entity is None:
                raise
            return utils.get_input_peer(entity)

    async def _entity(self, account: str, chat_id: int) -> Any:
        found = await self._backend.entities(account, [chat_id])
        return self._codec_().entity(found[chat_id]) if chat_id in found else None

    def _on_auth_lost(self, change: StateChange) -> None:
        self._client._spawn("cache purge", self._purge_once)

    async def _purge_once(self) -> None:
        if not self._purged:
            self._purged = True
            await self.purge()

    def _on_state_change(self, change: StateChange) -> None:
        if change.old is ConnectionState.CONNECTED:
            self._current_at = max(self._current_at, change.at)
