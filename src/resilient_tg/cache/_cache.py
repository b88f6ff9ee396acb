"""MessageCache: recent messages per account and chat, kept gap-free by updates.

The definition of complete, word for word as in docs/cache.md:

Complete: per account and chat, the cache holds a span of message ids, from `Span.low`
up. A span is anchored by a `messages.getHistory` answer taken while the client is
CONNECTED (the span's token is read before the request is sent, so that a break in
between makes the anchoring fail) and extended by every update applied since. Anything
that can break that chain ends the span: a "too long" difference (a channel's ends that
channel's span; the account's differenceTooLong ends every span of the account), a
channel Telethon stops following, an own sent or deleted message the cache cannot fetch, a failed
backend write, and a start whose persisted update state (the session's pts and channel
pts) is ahead of the cache's cursor or unknown to it. A range is complete when a span
covers it: reads of complete ranges are answered from the cache, all others from
Telegram.

Writes come from Telethon's message box through `_compat.set_update_feed`: every update
it applies, in the order it applies them (pts order, the catch-up after each reconnect
included), is queued and written by one task (`UpdateWriter`). The `Cursor` written
after a batch is the box's state when the batch was taken from the queue, so it never
claims an update the cache has not written; the session's stored update state waits for
the same queue (its ``update_state_gate``), so a restart does not skip what the cache
missed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import attrs

from .. import _compat
from .._errors import StaleCacheError
from .._state import ConnectionState, StateChange
from ..stores._encryption import resolve_key
from ._answer import CacheAnswer, DialogEntry, Source
from ._backend import CacheBackend, Cursor, ReadMarks
from ._bounds import Bounds, enforce, trim_written
from ._codec import Codec, PeerHints, load_messages, load_read
from ._cursor import box_cursor, end_restart_breaks, loaded_state
from ._fetch import (
    HISTORY_PAGE,
    HistoryFetch,
    anchored_span,
    cached_dialogs,
    chat_id_of,
    covers,
    fetch_dialogs,
    fetch_message,
    input_peer,
    sorted_dialogs,
)
from ._host import CacheHost
from ._queue import UpdateQueue
from ._writer import UpdateWriter

__all__ = ["MessageCache"]

log = logging.getLogger("resilient_tg.cache")

_SETTLE = 2.0  # how long a read waits for queued updates to be written first
_MAINTAIN_EVERY = 30.0  # seconds between bound checks (also after _TRIM_AFTER writes)
_CURSOR_EVERY = 0.2  # seconds between cursor writes while updates keep coming


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
        self._queue = UpdateQueue()
        self._epoch = 0  # local breaks: a fetch started before one must not anchor
        self._pinned: dict[int, bool] = {}
        self._touched: dict[int, float] = {}
        self._hints = PeerHints()  # the entities each chat's last read wanted
        self._loaded: tuple[int, dict[int, int]] | None = None  # session state at start
        self._current_at = 0.0
        self._started_at = time.time()
        self._last_maintain = time.monotonic()
        self._purged = False
        self._ready_lock = anyio.Lock()
        self._pending_cursor: Cursor | None = None  # written at most every _CURSOR_EVERY
        self._cursor_at = 0.0
        self._stopped = False  # after AUTH_LOST or a log out: nothing more is written
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
        connected = self._connected()
        if not connected:
            self._refuse_if_fresh(fresh)
        settled = connected and await self._settle()
        # One backend call: the span (read with the messages or before them), the
        # messages, the entities their last read wanted, and the read's touch when due.
        asked = self._hints.get(chat_id)
        touch = self._touch_due(chat_id) if connected else None
        read = await self._backend.read_history(
            account, chat_id, below=offset_id or None, limit=limit, peers=asked, touch=touch
        )
        state = read.state
        whole = state.span is not None and covers(state.span, read.messages, limit)
        if not connected or (settled and whole):
            found, wanted = await load_read(
                self._backend, account, self._codec_(), read, asked, self._client.telegram
            )
            self._hints.remember(chat_id, wanted)
            if not connected:
                return self._stale(found, whole)
            return self._current(found, Source.CACHE)
        telegram = self._client.telegram
        epoch = self._epoch
        fetch = HistoryFetch(
            self._backend, account, self._codec_(), chat_id, offset_id, HISTORY_PAGE
        )
        await fetch.run(
            telegram, await input_peer(telegram, self._backend, account, self._codec_(), chat_id)
        )
        if self._connected() and epoch == self._epoch:
            span = anchored_span(fetch, state, time.time())
            if span is not None:
                await self._backend.set_span(account, chat_id, span, state.token)
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
        if await self._settle():
            # One backend call, as for history: the span and the newest live message at
            # or below the id (a tombstone or a gap is not returned: None when inside).
            asked = self._hints.get(chat_id)
            read = await self._backend.read_history(
                account,
                chat_id,
                below=message_id + 1,
                limit=1,
                peers=asked,
                touch=self._touch_due(chat_id),
            )
            span = read.state.span
            if span is not None and (span.from_start or message_id >= span.low):
                hit = attrs.evolve(read, messages=[m for m in read.messages if m.id == message_id])
                found, _ = await load_read(
                    self._backend, account, self._codec_(), hit, asked, self._client.telegram
                )
                return self._current(found[0] if found else None, Source.CACHE)
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
            entries = await cached_dialogs(
                self._backend, account, self._codec_(), cached[:limit], self._client.telegram
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
        self._queue.drop()
        self._pending_cursor = None
        self._writer = None  # it remembers what it wrote
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
        session.update_state_gate = lambda: self._queue.idle.is_set() and (gate is None or gate())
        client._spawn("cache", self._run)

    async def _quiesce(self, limit: float) -> None:
        """Leaving: write what is queued (bounded), and the cursor if all of it was."""
        with anyio.move_on_after(limit):
            await self._queue.idle.wait()
        if not self._queue.idle.is_set():
            log.info("cache: %d update(s) not written on the way out", len(self._queue))

    async def _close(self) -> None:
        """After the client's tasks ended: purge after a logout, unhook the feed."""
        session = self._client._session
        if self._client._telegram is not None:
            _compat.set_update_feed(self._client._telegram, None)
        if session is not None and session.logged_out and not self._purged:
            self._stopped = True
            self._purged = True
            try:
                await self.purge()
            except Exception as exc:  # noqa: BLE001 - reported; the client still closes
                log.warning("cache: purge after log out failed: %s", exc)

    def _on_update(self, update: Any, users: Any, chats: Any, pts: int) -> None:
        if not self._stopped:
            self._queue.put((update, users, chats, pts))

    async def _run(self) -> None:
        """The writer task: write what the box fed, in order; never dies of a failure (a
        feed nobody writes would hold the session's update state back for good)."""
        queue = self._queue
        while True:
            if not queue:
                if self._pending_cursor is not None:
                    await self._write_cursor()  # before idle: the session waits for it
                    continue
                queue.idle.set()
                try:
                    if time.monotonic() - self._last_maintain >= _MAINTAIN_EVERY:
                        await self.maintain()
                except Exception as exc:  # noqa: BLE001 - retried at the next interval
                    log.warning("cache: applying the bounds failed: %s", exc)
                with anyio.move_on_after(_MAINTAIN_EVERY):
                    await queue.wake.wait()
                queue.wake.clear()
                continue
            try:
                writer = await self._writer_()
            except Exception as exc:  # noqa: BLE001 - e.g. no link for get_me: retry
                log.info("cache: cannot start writing yet (%s); retrying", exc)
                await anyio.sleep(1.0)
                continue
            entries, generation = queue.take()
            cursor = box_cursor(self._client.telegram, 0.0)  # in step with ``entries``
            try:
                await writer.apply(entries)
                if self._account is not None:
                    await trim_written(self._backend, self._account, writer, self.bounds)
            except Exception as exc:  # noqa: BLE001 - the backend failed: see _broken
                if not self._broken:
                    log.warning(
                        "cache: writing updates to %s failed (%s); the account's spans end",
                        self._backend.describe(),
                        exc,
                    )
                self._broken = True
                self._epoch += 1
            if not queue.done(entries, generation):
                continue  # purged meanwhile: the queue was emptied, nothing to cursor
            self._pending_cursor = cursor
            if time.monotonic() - self._cursor_at >= _CURSOR_EVERY:
                await self._write_cursor()

    async def _write_cursor(self) -> None:
        """Store the pending cursor: the box's state when the last batch written was taken
        from the queue (the queue is fed in step with the box: that is all it covers)."""
        cursor, self._pending_cursor = self._pending_cursor, None
        self._cursor_at = time.monotonic()
        if cursor is None or self._account is None:
            return
        try:
            if self._broken:
                await self._backend.end_spans(self._account, None)
                self._broken = False
            if self._connected() and not self._queue:
                self._current_at = time.time()
            cursor = attrs.evolve(cursor, current_at=self._current_at)
            await self._backend.set_cursor(self._account, cursor)
        except Exception as exc:  # noqa: BLE001 - still behind: a later batch writes it
            log.info("cache: writing the cursor to %s failed: %s", self._backend.describe(), exc)

    async def _writer_(self) -> UpdateWriter:
        """The writer, once the account is known (checking the restart on first use)."""
        if self._writer is None:
            account = await self._ready()
            self._writer = UpdateWriter(
                self._backend,
                account,
                self._codec_(),
                self._own_fetch,
                lambda: _compat.account_state(self._client.telegram),
                self._break,
                self._pinned,
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
                if not self._connected():
                    state = self._client.state.value
                    raise StaleCacheError(
                        f"the cache's account is not known yet (no login in the session) "
                        f"and the client is {state}: pass account= or wait for CONNECTED",
                        state=state,
                    )
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
        """End the spans whose updates may have passed while the cache was not written."""
        self._epoch += 1  # (harmless when nothing ended: no fetch is in flight yet)
        self._current_at = await end_restart_breaks(self._backend, account, self._loaded)

    # Helpers ----------------------------------------------------------------------------

    def _codec_(self) -> Codec:
        assert self._codec is not None
        return self._codec

    def _connected(self) -> bool:
        return self._client.state is ConnectionState.CONNECTED

    async def _settle(self) -> bool:
        """Let the updates queued before this read be written first, so that it sees what
        the client had seen (not a wait for an empty queue, which a steady stream never
        leaves). False when they were not written in time: it cannot answer as current."""
        return await self._queue.settle(_SETTLE) and not self._broken

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
        return await load_messages(
            self._backend, account, self._codec_(), records, self._client.telegram
        )

    def _touch_due(self, chat_id: int) -> float | None:
        """Now, when a read of the chat is to be recorded for the bounds (at most once a
        second per chat: a write each), else None."""
        now = time.time()
        if now - self._touched.get(chat_id, 0.0) < 1.0:
            return None
        self._touched[chat_id] = now
        return now

    def _on_auth_lost(self, change: StateChange) -> None:
        self._client._spawn("cache purge", self._purge_once)

    async def _purge_once(self) -> None:
        self._stopped = True
        if not self._purged:
            self._purged = True
            await self.purge()

    def _on_state_change(self, change: StateChange) -> None:
        if change.old is ConnectionState.CONNECTED:
            self._current_at = max(self._current_at, change.at)
