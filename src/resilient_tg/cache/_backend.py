"""CacheBackend: where a MessageCache keeps messages, spans and cursors.

A backend is storage with a few merge rules, not logic: the `MessageCache` decides what
is complete and when; the backend keeps what it is given so that replays and racing
writers cannot move anything back in time. The rules every backend keeps (and the
contract suite in `resilient_tg.testing.cache_contract` checks):

- Everything is keyed by ``account`` (a name, e.g. the fleet's account or session
  name) and then by chat (Telethon's marked peer id): one account never reads another's.
- Messages merge by `CachedMessage.version`: a stored version is replaced only by a
  strictly newer one. A tombstone is newer than any live version, so a late or replayed
  "new message" never brings a deleted message back.
- A deletion that names no chat (private chats and basic groups share one id sequence
  per account: ``updateDeleteMessages`` carries ids only) tombstones the id in whichever
  non-channel chat holds it; an id no chat holds yet is remembered for the account (up
  to `ORPHAN_TOMBSTONES` ids) so that a history answer racing the deletion cannot store
  it later.
- A span (`Span`) is changed only by compare-and-set on the token read with it
  (`SpanState.token`): `end_spans` changes the tokens, so a history answer requested
  before a break can no longer anchor a span after it.
- Read marks and cursors only move forward.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import attrs

__all__ = [
    "ORPHAN_TOMBSTONES",
    "CacheBackend",
    "CachedDialog",
    "CachedMessage",
    "ChatUsage",
    "Cursor",
    "HistoryRead",
    "ReadMarks",
    "Span",
    "SpanState",
    "is_channel",
]

# How many chat-less deleted ids a backend remembers per account (the oldest go first).
ORPHAN_TOMBSTONES = 10_000


def is_channel(chat_id: int) -> bool:
    """Whether a marked peer id is a channel or supergroup (its own id and pts sequence)."""
    return chat_id <= -1_000_000_000_000


@attrs.frozen
class CachedMessage:
    """One message as the cache keeps it: its latest version, or a tombstone.

    ``body`` is opaque to the backend (the message's TL bytes, sealed when the cache
    encrypts). ``pts`` is that of the update that carried this version, 0 when it came
    from a history answer.
    """

    chat_id: int
    id: int
    date: int
    edit_date: int = 0
    pts: int = 0
    deleted: bool = False
    body: bytes = attrs.field(default=b"", repr=False)

    @property
    def version(self) -> tuple[int, int, int]:
        """Merge order: tombstone over live, then the later edit, then the later pts."""
        return (int(self.deleted), self.edit_date, self.pts)

    def tombstone(self, pts: int = 0) -> CachedMessage:
        """This message deleted (body dropped)."""
        return attrs.evolve(self, deleted=True, body=b"", pts=max(pts, self.pts))


@attrs.frozen
class Span:
    """Every message of the chat with ``id >= low`` is in the cache (live or tombstone).

    Anchored by a history answer taken while connected and extended by every update
    applied since; ``from_start`` says nothing older than ``low`` exists.
    """

    low: int
    from_start: bool = False
    anchored_at: float = 0.0  # wall clock of the anchoring history answer


@attrs.frozen
class SpanState:
    """A chat's span (None: nothing proven complete) and the token to change it with."""

    span: Span | None
    token: str


@attrs.frozen
class HistoryRead:
    """What `CacheBackend.read_history` answers: the chat's span state, its live messages
    (newest first) and the stored entities among the peers asked for."""

    state: SpanState
    messages: list[CachedMessage]
    entities: dict[int, bytes]


@attrs.frozen
class ReadMarks:
    """Read receipts of one chat: the highest ids read in each direction."""

    inbox_max_id: int = 0
    outbox_max_id: int = 0


@attrs.frozen
class Cursor:
    """The update state the cache has applied everything up to (per account).

    ``pts``/``qts``/``date``/``seq`` are the account's common box, ``channels`` each
    channel's pts; ``current_at`` is the wall clock when the cache was last known current.
    """

    pts: int = 0
    qts: int = 0
    date: int = 0
    seq: int = 0
    channels: Mapping[int, int] = attrs.field(factory=dict)
    current_at: float = 0.0


@attrs.frozen
class CachedDialog:
    """One dialog as the cache keeps it: ordered by its top message."""

    chat_id: int
    top_id: int
    top_date: int
    pinned: bool = False
    body: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class ChatUsage:
    """What one chat costs and when it was last read (for the cache's bounds)."""

    account: str
    chat_id: int
    messages: int
    last_read: float


class CacheBackend(abc.ABC):
    """Storage for `MessageCache`: subclass it to keep the cache anywhere.

    All methods are coroutines; a backend may be shared by many caches (accounts) and
    by many processes. ``async with backend:`` closes it on exit.
    """

    # -- messages ----------------------------------------------------------------------

    @abc.abstractmethod
    async def put_messages(self, account: str, messages: Sequence[CachedMessage]) -> None:
        """Merge messages (any chats) by version; tombstones of orphan ids win too."""

    @abc.abstractmethod
    async def delete_ids(self, account: str, ids: Iterable[int], pts: int = 0) -> list[int]:
        """Tombstone non-channel messages by id alone; return the chats that held them."""

    @abc.abstractmethod
    async def get_message(
        self, account: str, chat_id: int, message_id: int
    ) -> CachedMessage | None:
        """One stored message or tombstone, or None."""

    @abc.abstractmethod
    async def history(
        self, account: str, chat_id: int, *, below: int | None, limit: int
    ) -> list[CachedMessage]:
        """Live messages with ``id < below`` (all when None), newest first, at most ``limit``."""

    @abc.abstractmethod
    async def trim(self, account: str, chat_id: int, keep: int) -> int:
        """Keep the newest ``keep`` live messages of a chat; raise its span's ``low`` to the
        oldest one kept (``from_start`` off when anything went). Return how many went."""

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
        """A cached history read in one go: the chat's span state, then `history` (``below``,
        ``limit``), the stored `entities` among ``peers``, and with ``touch`` a `touch` at
        that time. The span must be read in the same snapshot as the messages or before
        them, never after (a span anchored after the messages were read could claim ids
        they miss). Optional: this default makes those calls one after the other; a shared
        backend overrides it to make one round trip."""
        state = await self.span(account, chat_id)
        messages = await self.history(account, chat_id, below=below, limit=limit)
        wanted = list(peers)
        found = await self.entities(account, wanted) if wanted else {}
        if touch is not None:
            await self.touch(account, chat_id, touch)
        return HistoryRead(state, messages, found)

    # -- spans -------------------------------------------------------------------------

    @abc.abstractmethod
    async def span(self, account: str, chat_id: int) -> SpanState:
        """The chat's span and the token `set_span` must be given to change it."""

    @abc.abstractmethod
    async def set_span(self, account: str, chat_id: int, span: Span, token: str) -> bool:
        """Store ``span`` if the chat's token is still ``token``; say whether it was."""

    @abc.abstractmethod
    async def end_spans(self, account: str, chat_ids: Iterable[int] | None = None) -> None:
        """End the spans of these chats (all of the account's when None) and the dialog
        list's span: new tokens, so no answer requested before this can anchor after it."""

    # -- per-chat state ----------------------------------------------------------------

    @abc.abstractmethod
    async def read_marks(self, account: str, chat_id: int) -> ReadMarks:
        """The chat's read receipts (zeros when unknown)."""

    @abc.abstractmethod
    async def mark_read(
        self, account: str, chat_id: int, *, inbox_max_id: int = 0, outbox_max_id: int = 0
    ) -> None:
        """Move read receipts forward (never back)."""

    @abc.abstractmethod
    async def chats(self, account: str) -> list[int]:
        """Every chat the account has anything cached for."""

    @abc.abstractmethod
    async def drop_chat(self, account: str, chat_id: int) -> None:
        """Forget a chat: messages, tombstones, span (ended), read marks, usage."""

    @abc.abstractmethod
    async def touch(self, account: str, chat_id: int, when: float) -> None:
        """Record a read of the chat (for eviction and the idle TTL)."""

    @abc.abstractmethod
    async def usage(self) -> list[ChatUsage]:
        """Every chat of every account with its message count and last read."""

    # -- account state -----------------------------------------------------------------

    @abc.abstractmethod
    async def cursor(self, account: str) -> Cursor | None:
        """The update state the account's cache is current to, or None."""

    @abc.abstractmethod
    async def set_cursor(self, account: str, cursor: Cursor) -> None:
        """Store a cursor; each pts (common and per channel) only moves forward."""

    @abc.abstractmethod
    async def dialogs(self, account: str) -> tuple[list[CachedDialog], SpanState]:
        """The cached dialogs, newest top message first, and the dialog list's span
        state (`Span.from_start` True: the list is every dialog the account has)."""

    @abc.abstractmethod
    async def put_dialogs(
        self, account: str, dialogs: Sequence[CachedDialog], *, span: Span | None, token: str | None
    ) -> bool:
        """Merge dialogs (the higher ``top_id`` wins per chat); with ``span`` and ``token``,
        also set the dialog list's span by compare-and-set. Say whether the span was set."""

    @abc.abstractmethod
    async def put_entities(self, account: str, entities: Mapping[int, bytes]) -> None:
        """Store users/chats (TL bytes, opaque) by marked peer id; the latest wins."""

    @abc.abstractmethod
    async def entities(self, account: str, peer_ids: Iterable[int]) -> dict[int, bytes]:
        """The stored entities among ``peer_ids``."""

    @abc.abstractmethod
    async def purge(self, account: str) -> None:
        """Forget everything of the account (logout, AUTH_LOST, removal from a fleet)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most backends need it
        """Release connections. The default does nothing."""

    def describe(self) -> str:
        """Where the cache lives, for logs and health (no passwords)."""
        return type(self).__name__

    async def __aenter__(self) -> CacheBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
