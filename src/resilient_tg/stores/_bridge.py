"""StoreSession: a Telethon Session whose state lives in memory and is persisted
through a SessionStore.

Telethon calls session methods synchronously from its event loop (an awaitable
return value makes it warn), so this session changes memory at once and writes in
the background: auth key and DC changes as soon as possible, entities and update
state batched at most every ``flush_interval`` seconds. ``await flush()`` makes the
current state durable; ``aclose()`` flushes and stops the writer.

It writes back only what its client learned: Telethon's "nothing known" update state
(pts 0, date 1, written by a client that never fetched one) never replaces the stored
one, and while ``hold_update_state()`` is in force (ResilientClient, until it has
caught up on a link) the update state stays exactly as loaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from telethon.crypto import AuthKey
from telethon.sessions import MemorySession
from telethon.tl import types

from .._errors import LeaseLostError
from .._flag import Flag
from ._base import SessionStore
from ._data import Entity, SessionData, UpdateState
from ._messages import store_error_text

__all__ = ["StoreSession"]

log = logging.getLogger("resilient_tg.stores")

_RETRY_MIN = 0.5
_RETRY_MAX = 30.0


class StoreSession(MemorySession):  # type: ignore[misc]  # Telethon is untyped
    """A Telethon session backed by a `SessionStore`. Takes no lease.

    ``session = await StoreSession.open(store)``, then
    ``TelegramClient(session, api_id, api_hash)``; ``await session.flush()`` whenever
    the state must be durable, ``await session.aclose()`` at the end.
    """

    def __init__(self, store: SessionStore, *, flush_interval: float = 1.0) -> None:
        super().__init__()
        if not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval!r}")
        self.store = store
        self.flush_interval = flush_interval
        self._rows: dict[int, tuple[Any, ...]] = {}
        self._changes = 0  # bumped on every change worth persisting
        self._saved_changes = 0
        self._urgent = False
        self._delete_requested = False
        self._logged_out = False
        self._lock: asyncio.Lock | None = None
        self._wake: Flag | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        # The auth key that was ever logged in (None: the current key never was).
        self._authorized_key: bytes | None = None
        self._update_state_held = False
        #: Set by the client: update-state writes are taken only while this returns True
        #: (no event handler runs), so a stored pts never covers an unhandled update.
        self.update_state_gate: Callable[[], bool] | None = None
        #: Set by the client: the state Telethon's message box has reached (None while it
        #: has none). A connect() after the first in this process continues from it, not
        #: from the stored state, which stays behind updates whose handlers still run:
        #: else those updates would be fetched and handled a second time.
        self.box_update_states: Callable[[], list[tuple[int, Any]] | None] | None = None
        # Whether Telethon's box was loaded from this session since it was (re)loaded.
        self._box_loaded = False
        #: The error of the last failed write (None once a write succeeds), for health.
        self.last_save_error: BaseException | None = None
        self.last_saved_at: float | None = None
        self.last_save_duration: float | None = None
        self.save_failures = 0
        #: Called after every write with its duration and error (None on success).
        self.save_listeners: list[Callable[[float, BaseException | None], None]] = []

    def __repr__(self) -> str:
        return f"<StoreSession {self.store.describe()} dc {self._dc_id}>"

    @classmethod
    async def open(cls, store: SessionStore, *, flush_interval: float = 1.0) -> StoreSession:
        """Load the stored session (SessionCorruptError propagates; nothing is overwritten)."""
        session = cls(store, flush_interval=flush_interval)
        data = await store.load()
        if data is not None:
            session.apply(data)
        return session

    # Conversion -----------------------------------------------------------------

    def apply(self, data: SessionData) -> None:
        """Replace the in-memory state with ``data`` (marks nothing dirty)."""
        self._dc_id = data.dc_id
        self._server_address = data.server_address
        self._port = data.port
        self._auth_key = AuthKey(data.auth_key) if data.auth_key else None
        self._takeout_id = data.takeout_id
        self._update_states = {}
        if data.update_state is not None:
            state = data.update_state
            self._update_states[0] = types.updates.State(
                pts=state.pts, qts=state.qts, date=_date(state.date), seq=state.seq, unread_count=0
            )
            for channel_id, pts in state.channels.items():
                self._update_states[channel_id] = types.updates.State(
                    pts=pts, qts=0, date=_date(0), seq=0, unread_count=0
                )
        self._rows = {
            e.id: (e.id, e.access_hash, e.username, e.phone, e.name) for e in data.entities
        }
        self._entities = set(self._rows.values())
        self._authorized_key = data.auth_key if data.ever_authorized else None

    def snapshot(self) -> SessionData | None:
        """The current state as SessionData (None before any DC is set)."""
        if not self._dc_id or not self._server_address or not self._port:
            return None
        account = self._update_states.get(0)
        state = None
        if account is not None:
            state = UpdateState(
                pts=account.pts,
                qts=account.qts,
                date=_timestamp(account.date),
                seq=account.seq,
                channels={k: v.pts for k, v in self._update_states.items() if k != 0},
            )
        return SessionData(
            dc_id=self._dc_id,
            server_address=self._server_address,
            port=self._port,
            auth_key=self._auth_key.key if self._auth_key else None,
            takeout_id=self._takeout_id,
            update_state=state,
            entities=tuple(
                Entity(id=r[0], access_hash=r[1], username=r[2], phone=r[3], name=r[4])
                for r in self._rows.values()
            ),
            ever_authorized=self.ever_authorized,
        )

    # Authorization and update state ------------------------------------------------------

    @property
    def ever_authorized(self) -> bool:
        """Whether the current auth key was ever logged in (a new key never was)."""
        key = self._auth_key.key if self._auth_key is not None else None
        return key is not None and key == self._authorized_key

    def mark_authorized(self) -> None:
        """The server accepted the current key as logged in: persist that (promptly)."""
        key = self._auth_key.key if self._auth_key is not None else None
        if key is not None and key != self._authorized_key:
            self._authorized_key = key
            self._changed(urgent=True)

    @property
    def self_id(self) -> int | None:
        """The logged-in user's id as Telethon stored it (None before a login)."""
        row = self._rows.get(0)  # Telethon keeps its own id as the row of id 0
        return int(row[1]) if row is not None and row[1] else None

    @property
    def logged_out(self) -> bool:
        """Whether Telethon's log_out() deleted (or asked to delete) this session."""
        return self._logged_out

    def hold_update_state(self) -> None:
        """Keep the update state as loaded: Telethon's writes of it are ignored until
        `release_update_state` (a client that has not caught up knows no newer state)."""
        self._update_state_held = True

    def release_update_state(self) -> None:
        """Take Telethon's update state again (the client has caught up or logged in)."""
        self._update_state_held = False

    @property
    def update_state_held(self) -> bool:
        return self._update_state_held

    @property
    def knows_update_state(self) -> bool:
        """Whether an update state (the account's pts) was ever loaded or taken."""
        return 0 in self._update_states

    # Telethon's Session interface -----------------------------------------------------

    def set_dc(self, dc_id: int, server_address: str, port: int) -> None:
        super().set_dc(dc_id, server_address, port)
        self._changed(urgent=True)

    @MemorySession.auth_key.setter  # type: ignore[untyped-decorator]
    def auth_key(self, value: AuthKey | None) -> None:
        self._auth_key = value
        self._changed(urgent=True)

    @MemorySession.takeout_id.setter  # type: ignore[untyped-decorator]
    def takeout_id(self, value: int | None) -> None:
        self._takeout_id = value
        self._changed(urgent=True)

    def set_update_state(self, entity_id: int, state: Any) -> None:
        if self._update_state_held or (entity_id == 0 and _knows_nothing(state)):
            return
        gate = self.update_state_gate
        if gate is not None and not gate():
            return  # an update is still being handled: its pts must not be stored yet
        old = self._update_states.get(entity_id)
        super().set_update_state(entity_id, state)
        # A channel's state is its pts alone: Telethon stamps each save with the current
        # time, which must not count as a change (it would mean a write every flush).
        if old is None or _state_key(entity_id, old) != _state_key(entity_id, state):
            self._changed(urgent=False)

    def update_state_matches(
        self, self_id: int | None, state: dict[str, Any], channels: dict[int, int]
    ) -> bool:
        """Whether Telethon's periodic save of its update state (``state``, the account's
        pts/qts/date/seq, and each channel's pts) and of its own id would change nothing
        here: then the save, and the objects it builds, can be skipped."""
        if self_id:
            row = self._rows.get(0)  # Telethon keeps its own id as the row of id 0
            if row is None or row[1] != self_id:
                return False
        if self._update_state_held:
            return True  # the update state is not taken now anyway
        old = self._update_states.get(0)
        new = (state["pts"], state["qts"], state["seq"], _timestamp(state["date"]))
        empty = new[:3] == (0, 0, 0) and new[3] <= 1  # Telethon's empty box: never written
        if not empty and (old is None or (old.pts, old.qts, old.seq, _timestamp(old.date)) != new):
            return False
        for channel_id, pts in channels.items():
            old = self._update_states.get(channel_id)
            if old is None or old.pts != pts:
                return False
        return True

    def get_update_states(self) -> Any:
        """What Telethon's connect() loads into its message box: the stored state the first
        time (and after `reload`), the box's own state on every later connect."""
        provider = self.box_update_states
        if self._box_loaded and provider is not None:
            states = provider()
            if states is not None:
                return states
        self._box_loaded = True
        return super().get_update_states()

    def process_entities(self, tlo: Any) -> None:
        changed = False
        for row in self._entities_to_rows(tlo):
            old = self._rows.get(row[0])
            if old != row:
                if old is not None:
                    self._entities.discard(old)
                self._rows[row[0]] = row
                self._entities.add(row)
                changed = True
        if changed:
            self._changed(urgent=False)

    def save(self) -> None:
        """Telethon asks for persistence: write soon, in the background."""
        self._changed(urgent=True, count=False)

    def close(self) -> None:
        """Called by Telethon's disconnect(): write what is left, in the background."""
        self._changed(urgent=True, count=False)

    def delete(self) -> None:
        """Called by Telethon's log_out(): the stored session is deleted in the background."""
        self._delete_requested = True
        self._logged_out = True
        self._changed(urgent=True)

    # Persistence ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self._changes != self._saved_changes or self._delete_requested

    async def flush(self) -> None:
        """Make the current state durable now; raises the store's error if the write fails."""
        self._ensure_primitives()
        assert self._lock is not None
        async with self._lock:
            await self._write_locked()

    async def aclose(self) -> None:
        """Flush, then stop the background writer. Raises if the final write fails."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            # Let a write in flight finish (some drivers lose a cancellation mid-call);
            # the loop exits on _closed. Cancel only if it does not end in time.
            if self._wake is not None:
                self._wake.set()
            await asyncio.wait({writer}, timeout=5.0)
            if not writer.done():
                writer.cancel()
                await asyncio.wait({writer}, timeout=1.0)
        if self.dirty:
            await self.flush()

    def discard_changes(self) -> None:
        """Forget unsaved changes and stop writing (used when the key is lost: the store is
        left as it was, for inspection)."""
        self._saved_changes = self._changes
        self._delete_requested = False
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()

    def reload(self, data: SessionData | None) -> None:
        """Take the stored state again (after another holder had the lease) and resume
        writing."""
        if data is not None:
            self.apply(data)
        self._box_loaded = False  # another holder may have moved on: the store wins
        self._saved_changes = self._changes
        self._urgent = False
        self._delete_requested = False
        self._closed = False

    def _is_closed(self) -> bool:
        return self._closed

    def _ensure_primitives(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._wake = Flag()

    def _changed(self, *, urgent: bool, count: bool = True) -> None:
        if count:
            self._changes += 1
        if urgent:
            self._urgent = True
        if self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # set up before a loop runs (e.g. set_dc at construction): flush() writes it
        self._ensure_primitives()
        assert self._wake is not None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"resilient_tg session writer ({self.store.describe()})"
            )
            self._writer.add_done_callback(self._writer_ended)
        self._wake.set()

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        if self._writer is task:
            self._writer = None  # a finished task holds its coroutine's frame and name

    async def _write_loop(self) -> None:
        assert self._wake is not None
        assert self._lock is not None
        failures = 0
        while not self._is_closed():
            await self._wake.wait()
            self._wake.clear()
            if self._is_closed():
                return
            if not self._urgent and self.last_saved_at is not None:
                # Batch until the interval has passed, but an urgent change (auth key, DC,
                # Telethon's save()/close()) arriving meanwhile cuts the wait short.
                # (asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow the
                # cancellation that aclose() sends, leaving this task running for ever.)
                deadline = self.last_saved_at + self.flush_interval
                while not self._urgent and (wait := deadline - time.monotonic()) > 0:
                    waiter = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait({waiter}, timeout=wait)
                    finally:
                        waiter.cancel()
                    self._wake.clear()
            try:
                async with self._lock:
                    await self._write_locked()
            except LeaseLostError:
                # Someone else owns the session now: writing on would clobber it.
                log.error(  # noqa: TRY400 - one line; no traceback for an expected condition
                    "the session lease on %s was lost; not saving again until it is back",
                    self.store.describe(),
                )
                self._closed = True
                return
            except Exception as exc:  # noqa: BLE001 - any store failure: keep state, retry
                failures += 1
                delay = min(_RETRY_MAX, _RETRY_MIN * 2 ** (failures - 1))
                where = self.store.describe()
                log.warning(
                    "cannot save the session to %s: %s; keeping it in memory, retrying in %.1fs",
                    where,
                    store_error_text(where, exc),
                    delay,
                )
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                failures = 0
                if not self.dirty and not self._urgent and not self._wake.is_set():
                    # Nothing left: end; the next change starts a new writer. An idle
                    # session then holds no task (many clients per process add up).
                    return

    async def _write_locked(self) -> None:
        if self._delete_requested:
            started = time.monotonic()
            await self.store.delete()
            self._delete_requested = False
            self._saved_changes = self._changes
            self._urgent = False
            self._record_success(started)
            return
        if not self.dirty and not self._urgent:
            return
        data = self.snapshot()
        if data is None:
            self._urgent = False
            return
        changes = self._changes
        self._urgent = False
        started = time.monotonic()
        try:
            await self.store.save(data)
        except BaseException as exc:
            self._urgent = True
            if isinstance(exc, Exception):  # a cancelled write is no store error
                self.last_save_error = exc
                self.save_failures += 1
                self._report_save(time.monotonic() - started, exc)
            raise
        self._saved_changes = max(self._saved_changes, changes)
        self._record_success(started)

    def _record_success(self, started: float) -> None:
        now = time.monotonic()
        self.last_saved_at = now
        self.last_save_duration = now - started
        self.last_save_error = None
        self._report_save(self.last_save_duration, None)

    def _report_save(self, duration: float, error: BaseException | None) -> None:
        for listener in self.save_listeners:
            try:
                listener(duration, error)
            except Exception:
                log.exception("session save listener %r failed; ignored", listener)


def _state_key(entity_id: int, state: Any) -> tuple[Any, ...]:
    """What identifies an update state: the account's pts, qts, seq and date; a
    channel's pts."""
    if entity_id:
        return (state.pts,)
    return (state.pts, state.qts, state.seq, state.date)


def _knows_nothing(state: Any) -> bool:
    """Telethon's empty message box: what a client that never fetched a state writes."""
    return (state.pts, state.qts, state.seq) == (0, 0, 0) and _timestamp(state.date) <= 1


def _date(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


def _timestamp(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return max(0, int(value.timestamp()))
    if isinstance(value, int):
        return max(0, value)
    return 0
