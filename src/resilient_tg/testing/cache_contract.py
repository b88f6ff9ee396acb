"""The contract every `resilient_tg.cache.CacheBackend` must keep, as a test suite.

Run it on your own backend by subclassing `CacheBackendContract` in a test module and
giving it a ``backend`` fixture that yields an *empty* backend (one per test)::

    # tests/test_my_cache_backend.py
    import pytest
    from resilient_tg.testing.cache_contract import CacheBackendContract

    from myapp.cache import MongoCacheBackend


    @pytest.fixture
    def anyio_backend():
        return "asyncio"


    class TestMongoCacheBackend(CacheBackendContract):
        @pytest.fixture
        async def backend(self, mongo_url):
            backend = MongoCacheBackend(mongo_url, prefix="contract-test")
            yield backend
            for account in ("a", "b"):       # or drop the whole namespace
                await backend.purge(account)
            await backend.aclose()

Requirements: ``pip install 'resilient-tg[testing]'`` (pytest and hypothesis); the tests
are async and run under anyio's pytest plugin with an ``anyio_backend`` fixture returning
``"asyncio"``, as above. ``backend`` is function-scoped; the hypothesis test reuses one
backend for all its examples, each in accounts of its own.

They check every rule of `resilient_tg.cache.CacheBackend` (see its module docs):

- messages merge by version: a tombstone beats any live version, a later edit wins,
  then a later pts; an equal version keeps what is stored; a replay changes nothing; a
  batch holding one id twice keeps the newer;
- `delete_ids` tombstones by id alone in private chats and basic groups only (never a
  channel), returns the chats that held the ids, and remembers ids no chat holds (up to
  `ORPHAN_TOMBSTONES` per account, the oldest forgotten first) so that a later put of
  one stores a tombstone;
- `history` is newest first, below ``below``, at most ``limit``, tombstones left out;
  `trim` keeps the newest live messages, raises the span's ``low`` and clears
  ``from_start``;
- spans change by compare-and-set only: a token read before `end_spans` (of that chat
  or of the whole account), `drop_chat` or `purge` fails afterwards, tokens of other
  chats survive a per-chat end, and every end also ends the dialog list's span;
- read marks and cursors (common and per-channel pts) only move forward; dialogs are
  ordered pinned first, then by top message, and merge by ``top_id``; entities; usage;
- accounts never mix (names with ``:`` included), and `purge` forgets one account only;
- a random stream of puts, deletions, cursor moves and read marks, shuffled and partly
  replayed, ends in the same state as the stream applied in order (hypothesis).

Racing processes are not covered here: a backend shared by processes should also be
tested with real processes applying one stream, as resilient_tg's own tests do.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..cache._backend import (
    ORPHAN_TOMBSTONES,
    CacheBackend,
    CachedDialog,
    CachedMessage,
    Cursor,
    ReadMarks,
    Span,
)

__all__ = ["CHANNEL", "GROUP", "USER", "CacheBackendContract", "message", "message_streams"]

#: A private chat, a basic group and a channel (marked peer ids, as Telethon marks them).
USER = 4242
GROUP = -777
CHANNEL = -1_001_234_567_890
DATE = 1_700_000_000

_accounts = itertools.count()


def message(
    chat_id: int,
    message_id: int,
    *,
    edit_date: int = 0,
    pts: int = 0,
    deleted: bool = False,
    body: bytes | None = None,
) -> CachedMessage:
    """A message for tests: its body names its chat, id and edit."""
    if body is None:
        body = b"" if deleted else f"{chat_id}/{message_id}/{edit_date}/{pts}".encode() * 8
    return CachedMessage(
        chat_id=chat_id,
        id=message_id,
        date=DATE + message_id,
        edit_date=edit_date,
        pts=pts,
        deleted=deleted,
        body=body,
    )


# Private-chat and basic-group ids come from one sequence per account: keep them apart.
_UNIVERSE = (
    [(USER, i) for i in range(1, 16, 2)]
    + [(GROUP, i) for i in range(2, 17, 2)]
    + [(CHANNEL, i) for i in range(1, 9)]
)

Op = tuple[Any, ...]


@st.composite
def message_streams(draw: st.DrawFn) -> tuple[list[Op], list[Op]]:
    """An update stream in pts order, and the same stream shuffled with some replays.

    Each message is new, then edited 0-2 times, then maybe deleted (by id for private
    chats and basic groups, by a tombstone for channels); cursor moves and read marks
    are mixed in. Ops: ``("put", [CachedMessage])``, ``("delete", [id], pts)``,
    ``("cursor", Cursor)``, ``("read", chat, inbox, outbox)``.
    """
    keys = draw(st.lists(st.sampled_from(_UNIVERSE), min_size=1, max_size=6, unique=True))
    chains: list[list[tuple[str, int, int, int]]] = []
    for chat_id, message_id in keys:
        edits = draw(st.integers(min_value=0, max_value=2))
        chain = [("new", chat_id, message_id, 0)]
        chain += [("edit", chat_id, message_id, DATE + 100 * (e + 1)) for e in range(edits)]
        if draw(st.booleans()):
            chain.append(("delete", chat_id, message_id, 0))
        chains.append(chain)
    extras = draw(st.lists(st.sampled_from(["cursor", "read"]), max_size=4))
    slots: list[int | str] = [i for i, chain in enumerate(chains) for _ in chain]
    order = draw(st.permutations([*slots, *extras]))
    stream: list[Op] = []
    for pts, slot in enumerate(order, start=1):
        if slot == "cursor":
            stream.append(("cursor", Cursor(pts=pts, date=DATE + pts, channels={CHANNEL: pts})))
            continue
        if slot == "read":
            stream.append(("read", USER, pts, pts // 2))
            continue
        assert isinstance(slot, int)
        kind, chat_id, message_id, edit_date = chains[slot].pop(0)
        if kind == "delete" and chat_id != CHANNEL:
            stream.append(("delete", [message_id], pts))
        elif kind == "delete":
            stream.append(("put", [message(chat_id, message_id, pts=pts, deleted=True)]))
        else:
            stream.append(("put", [message(chat_id, message_id, edit_date=edit_date, pts=pts)]))
    replays = draw(st.lists(st.sampled_from(stream), max_size=5))
    shuffled = draw(st.permutations(stream + replays))
    return stream, shuffled


async def _apply(backend: CacheBackend, account: str, ops: list[Op]) -> None:
    for op in ops:
        if op[0] == "put":
            await backend.put_messages(account, op[1])
        elif op[0] == "delete":
            await backend.delete_ids(account, op[1], op[2])
        elif op[0] == "cursor":
            await backend.set_cursor(account, op[1])
        else:
            await backend.mark_read(account, op[1], inbox_max_id=op[2], outbox_max_id=op[3])


_PROPERTY = settings(
    max_examples=30,
    deadline=None,
    # One backend serves every example (each in accounts of its own); slow is no error.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.anyio
class CacheBackendContract:
    """Subclass with a ``backend`` fixture yielding an empty backend; see the module docs.

    ``property_examples`` is how many random streams the hypothesis test applies (lower
    it for a slow backend).
    """

    property_examples: int = 30

    @pytest.fixture
    def backend(self) -> Any:
        """Override: yield an empty instance of the backend under test."""
        raise NotImplementedError("CacheBackendContract subclasses must define a 'backend' fixture")

    @pytest.fixture
    def account(self) -> str:
        """A fresh account name per test."""
        return f"acct-{next(_accounts)}"

    # Messages -------------------------------------------------------------------------

    async def test_an_empty_backend_holds_nothing(
        self, backend: CacheBackend, account: str
    ) -> None:
        assert await backend.get_message(account, USER, 1) is None
        assert await backend.history(account, USER, below=None, limit=10) == []
        assert await backend.chats(account) == []
        state = await backend.span(account, USER)
        assert state.span is None
        assert isinstance(state.token, str)
        assert await backend.read_marks(account, USER) == ReadMarks()
        assert await backend.cursor(account) is None
        dialogs, dialog_state = await backend.dialogs(account)
        assert dialogs == []
        assert dialog_state.span is None
        assert await backend.entities(account, [USER]) == {}
        assert [u for u in await backend.usage() if u.account == account] == []
        assert await backend.delete_ids(account, []) == []
        await backend.put_messages(account, [])

    async def test_a_message_round_trips_every_field(
        self, backend: CacheBackend, account: str
    ) -> None:
        big = CachedMessage(
            chat_id=-1_009_999_999_999,
            id=2**31 - 1,
            date=2**31 - 2,
            edit_date=2**31 - 3,
            pts=2**31 - 4,
            body=bytes(range(256)) * 40,  # opaque bytes: NULs, high bytes, 10 KiB
        )
        small = message(USER, 1, body=b"")
        await backend.put_messages(account, [big, small])
        assert await backend.get_message(account, big.chat_id, big.id) == big
        assert await backend.get_message(account, USER, 1) == small
        assert await backend.get_message(account, USER, 2) is None
        assert await backend.get_message(account, GROUP, 1) is None

    async def test_a_later_edit_wins_and_an_earlier_one_arriving_late_is_ignored(
        self, backend: CacheBackend, account: str
    ) -> None:
        first = message(USER, 5, edit_date=0, pts=10)
        edited = message(USER, 5, edit_date=DATE + 60, pts=11)
        await backend.put_messages(account, [first])
        await backend.put_messages(account, [edited])
        assert await backend.get_message(account, USER, 5) == edited
        # A history answer (pts 0) or a replay of the original never goes back in time.
        await backend.put_messages(account, [first, message(USER, 5, pts=0)])
        assert await backend.get_message(account, USER, 5) == edited
        # A later edit with a lower pts (another pts box) still wins by edit_date.
        later = message(USER, 5, edit_date=DATE + 120, pts=3)
        await backend.put_messages(account, [later])
        assert await backend.get_message(account, USER, 5) == later

    async def test_at_equal_edit_date_the_later_pts_wins(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(CHANNEL, 7, edit_date=5, pts=20)])
        await backend.put_messages(account, [message(CHANNEL, 7, edit_date=5, pts=19)])
        assert (await backend.get_message(account, CHANNEL, 7)) == message(
            CHANNEL, 7, edit_date=5, pts=20
        )
        await backend.put_messages(account, [message(CHANNEL, 7, edit_date=5, pts=21)])
        assert (await backend.get_message(account, CHANNEL, 7)) == message(
            CHANNEL, 7, edit_date=5, pts=21
        )

    async def test_an_equal_version_keeps_the_stored_message(
        self, backend: CacheBackend, account: str
    ) -> None:
        stored = message(GROUP, 9, edit_date=3, pts=4, body=b"stored")
        await backend.put_messages(account, [stored])
        await backend.put_messages(account, [message(GROUP, 9, edit_date=3, pts=4, body=b"other")])
        assert await backend.get_message(account, GROUP, 9) == stored

    async def test_a_batch_with_one_id_twice_keeps_the_newer_version(
        self, backend: CacheBackend, account: str
    ) -> None:
        old, new = message(USER, 3, pts=1), message(USER, 3, edit_date=9, pts=2)
        await backend.put_messages(account, [new, old])
        assert await backend.get_message(account, USER, 3) == new
        await backend.put_messages(account, [message(USER, 4, pts=1), message(USER, 4, pts=2)])
        assert await backend.get_message(account, USER, 4) == message(USER, 4, pts=2)

    async def test_a_tombstone_beats_every_live_version(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(CHANNEL, 3, edit_date=5, pts=8)])
        gone = message(CHANNEL, 3, pts=9, deleted=True)
        await backend.put_messages(account, [gone])
        # A late edit, a replayed "new message", a history answer: none revives it.
        await backend.put_messages(
            account,
            [
                message(CHANNEL, 3, edit_date=DATE + 999, pts=50),
                message(CHANNEL, 3, pts=1),
                message(CHANNEL, 3),
            ],
        )
        stored = await backend.get_message(account, CHANNEL, 3)
        assert stored == gone
        assert stored is not None
        assert stored.deleted
        assert stored.body == b""

    async def test_replaying_a_batch_changes_nothing(
        self, backend: CacheBackend, account: str
    ) -> None:
        batch = [
            message(USER, 1, pts=1),
            message(USER, 3, edit_date=7, pts=2),
            message(GROUP, 2, pts=3, deleted=True),
            message(CHANNEL, 1, pts=4),
        ]
        await backend.put_messages(account, batch)
        before = [await backend.get_message(account, m.chat_id, m.id) for m in batch]
        await backend.put_messages(account, batch)
        await backend.put_messages(account, list(reversed(batch)))
        after = [await backend.get_message(account, m.chat_id, m.id) for m in batch]
        assert after == before == batch

    # Deletion by id ---------------------------------------------------------------------

    async def test_delete_ids_tombstones_private_chats_and_groups_never_channels(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(
            account,
            [
                message(USER, 1, pts=3),
                message(GROUP, 2, pts=4),
                message(CHANNEL, 1),
                message(CHANNEL, 2),
            ],
        )
        held = await backend.delete_ids(account, [1, 2], pts=5)
        assert sorted(held) == sorted([USER, GROUP])
        for chat_id, message_id in ((USER, 1), (GROUP, 2)):
            stored = await backend.get_message(account, chat_id, message_id)
            assert stored is not None
            assert stored.deleted
            assert stored.body == b""
            assert stored.pts == 5
            assert stored.date == DATE + message_id
        assert await backend.get_message(account, CHANNEL, 1) == message(CHANNEL, 1)
        assert await backend.get_message(account, CHANNEL, 2) == message(CHANNEL, 2)
        assert await backend.history(account, USER, below=None, limit=10) == []

    async def test_delete_ids_keeps_the_higher_pts_of_a_message(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, 11, pts=40)])
        assert await backend.delete_ids(account, [11], pts=0) == [USER]
        stored = await backend.get_message(account, USER, 11)
        assert stored is not None
        assert (stored.deleted, stored.pts) == (True, 40)

    async def test_an_id_no_chat_holds_is_remembered_and_a_later_put_stores_a_tombstone(
        self, backend: CacheBackend, account: str
    ) -> None:
        assert await backend.delete_ids(account, [21, 22], pts=50) == []
        # A history answer requested before the deletion arrives after it.
        await backend.put_messages(account, [message(USER, 21, pts=0), message(GROUP, 22, pts=60)])
        first = await backend.get_message(account, USER, 21)
        second = await backend.get_message(account, GROUP, 22)
        assert first is not None
        assert second is not None
        assert (first.deleted, first.pts, first.body) == (True, 50, b"")
        assert (second.deleted, second.pts, second.body) == (True, 60, b"")
        assert await backend.history(account, USER, below=None, limit=10) == []
        # Channels have their own ids: a remembered id never tombstones a channel message.
        await backend.delete_ids(account, [23])
        await backend.put_messages(account, [message(CHANNEL, 23)])
        assert await backend.get_message(account, CHANNEL, 23) == message(CHANNEL, 23)

    async def test_only_the_newest_orphan_tombstones_are_remembered(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.delete_ids(account, range(1, ORPHAN_TOMBSTONES + 1), pts=1)
        await backend.delete_ids(account, [ORPHAN_TOMBSTONES + 1], pts=2)
        await backend.put_messages(
            account,
            [message(USER, 1), message(USER, 2), message(USER, ORPHAN_TOMBSTONES + 1)],
        )
        oldest = await backend.get_message(account, USER, 1)
        kept = await backend.get_message(account, USER, 2)
        newest = await backend.get_message(account, USER, ORPHAN_TOMBSTONES + 1)
        assert oldest == message(USER, 1)  # forgotten: the bound held
        assert kept is not None
        assert kept.deleted
        assert newest is not None
        assert newest.deleted

    # History and trim -------------------------------------------------------------------

    async def test_history_is_newest_first_below_and_limited_without_tombstones(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(CHANNEL, i, pts=i) for i in range(1, 11)])
        await backend.put_messages(account, [message(CHANNEL, 8, pts=20, deleted=True)])
        await backend.put_messages(account, [message(-1_005_555_555_555, 100)])

        def ids(found: list[CachedMessage]) -> list[int]:
            return [m.id for m in found]

        assert ids(await backend.history(account, CHANNEL, below=None, limit=100)) == [
            10, 9, 7, 6, 5, 4, 3, 2, 1,
        ]  # fmt: skip
        assert ids(await backend.history(account, CHANNEL, below=None, limit=3)) == [10, 9, 7]
        assert ids(await backend.history(account, CHANNEL, below=9, limit=3)) == [7, 6, 5]
        assert ids(await backend.history(account, CHANNEL, below=2, limit=3)) == [1]
        assert await backend.history(account, CHANNEL, below=1, limit=3) == []
        assert await backend.history(account, CHANNEL, below=None, limit=0) == []
        found = await backend.history(account, CHANNEL, below=None, limit=1)
        assert found == [message(CHANNEL, 10, pts=10)]

    async def test_trim_keeps_the_newest_and_raises_the_span(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(GROUP, i) for i in range(1, 11)])
        await backend.delete_ids(account, [5])
        state = await backend.span(account, GROUP)
        assert await backend.set_span(account, GROUP, Span(low=1, from_start=True), state.token)
        assert await backend.trim(account, GROUP, 3) == 6  # live 1-4, 6, 7
        found = await backend.history(account, GROUP, below=None, limit=100)
        assert [m.id for m in found] == [10, 9, 8]
        assert await backend.get_message(account, GROUP, 5) is None  # tombstones below go too
        assert await backend.get_message(account, GROUP, 1) is None
        span = (await backend.span(account, GROUP)).span
        assert span is not None
        assert (span.low, span.from_start) == (8, False)
        # Nothing to trim: nothing changes.
        assert await backend.trim(account, GROUP, 3) == 0
        assert await backend.trim(account, GROUP, 50) == 0
        assert (await backend.span(account, GROUP)).span == span

    async def test_trim_to_zero_empties_the_chat_and_its_span_starts_above_it(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, i) for i in (1, 3, 5)])
        state = await backend.span(account, USER)
        assert await backend.set_span(account, USER, Span(low=1, from_start=True), state.token)
        assert await backend.trim(account, USER, 0) == 3
        assert await backend.history(account, USER, below=None, limit=10) == []
        span = (await backend.span(account, USER)).span
        assert span is not None
        assert span.low == 6
        assert not span.from_start

    async def test_trim_leaves_a_chat_without_a_span_without_one(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, i) for i in (1, 3, 5)])
        assert await backend.trim(account, USER, 1) == 2
        assert (await backend.span(account, USER)).span is None
        assert await backend.trim(account, GROUP, 1) == 0  # a chat never seen

    # Spans ------------------------------------------------------------------------------

    async def test_a_span_is_set_with_the_token_read_with_it(
        self, backend: CacheBackend, account: str
    ) -> None:
        state = await backend.span(account, CHANNEL)
        span = Span(low=100, from_start=False, anchored_at=1234.5)
        assert await backend.set_span(account, CHANNEL, span, state.token)
        again = await backend.span(account, CHANNEL)
        assert again.span == span
        # Setting a span is no break: the same token still extends it.
        wider = Span(low=50, from_start=True, anchored_at=1234.5)
        assert await backend.set_span(account, CHANNEL, wider, again.token)
        assert (await backend.span(account, CHANNEL)).span == wider
        assert not await backend.set_span(account, CHANNEL, span, state.token + "x")
        assert not await backend.set_span(account, CHANNEL, span, "")
        assert (await backend.span(account, CHANNEL)).span == wider

    async def test_ending_one_chat_fails_its_old_token_and_spares_other_chats(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, 1), message(CHANNEL, 1)])
        user, channel, group = [await backend.span(account, c) for c in (USER, CHANNEL, GROUP)]
        assert await backend.set_span(account, USER, Span(low=1), user.token)
        user_token = (await backend.span(account, USER)).token
        channel_token, group_token = channel.token, group.token
        await backend.end_spans(account, [USER])
        assert (await backend.span(account, USER)).span is None
        assert not await backend.set_span(account, USER, Span(low=1), user_token)
        assert await backend.set_span(account, CHANNEL, Span(low=1), channel_token)
        assert await backend.set_span(account, GROUP, Span(low=2), group_token)
        # A fresh token works again.
        fresh = await backend.span(account, USER)
        assert await backend.set_span(account, USER, Span(low=1), fresh.token)

    async def test_ending_a_chat_never_seen_fails_a_token_read_before(
        self, backend: CacheBackend, account: str
    ) -> None:
        token = (await backend.span(account, GROUP)).token
        await backend.end_spans(account, [GROUP])
        assert not await backend.set_span(account, GROUP, Span(low=1), token)

    async def test_ending_every_span_fails_every_earlier_token(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, 1)])
        tokens = {c: (await backend.span(account, c)).token for c in (USER, GROUP, CHANNEL)}
        assert await backend.set_span(account, USER, Span(low=1), tokens[USER])
        await backend.end_spans(account)
        assert (await backend.span(account, USER)).span is None
        for chat_id, token in tokens.items():
            assert not await backend.set_span(account, chat_id, Span(low=1), token)
        for chat_id in tokens:
            fresh = await backend.span(account, chat_id)
            assert await backend.set_span(account, chat_id, Span(low=2), fresh.token)
        # Messages stay: ending spans only says they may no longer be complete.
        assert await backend.get_message(account, USER, 1) == message(USER, 1)

    async def test_every_end_of_spans_ends_the_dialog_span(
        self, backend: CacheBackend, account: str
    ) -> None:
        for chat_ids in ([USER], None):
            _, state = await backend.dialogs(account)
            assert await backend.put_dialogs(account, [], span=Span(low=0), token=state.token)
            assert (await backend.dialogs(account))[1].span == Span(low=0)
            await backend.end_spans(account, chat_ids)
            assert (await backend.dialogs(account))[1].span is None
            assert not await backend.put_dialogs(account, [], span=Span(low=0), token=state.token)

    async def test_drop_chat_forgets_it_and_fails_earlier_tokens(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, i) for i in (1, 3)])
        await backend.put_messages(account, [message(GROUP, 2)])
        await backend.mark_read(account, USER, inbox_max_id=3, outbox_max_id=1)
        await backend.touch(account, USER, 100.0)
        state = await backend.span(account, USER)
        assert await backend.set_span(account, USER, Span(low=1), state.token)
        token = (await backend.span(account, USER)).token
        group_token = (await backend.span(account, GROUP)).token
        await backend.drop_chat(account, USER)
        assert await backend.get_message(account, USER, 1) is None
        assert await backend.history(account, USER, below=None, limit=10) == []
        assert await backend.read_marks(account, USER) == ReadMarks()
        assert (await backend.span(account, USER)).span is None
        assert not await backend.set_span(account, USER, Span(low=1), token)
        assert sorted(await backend.chats(account)) == [GROUP]
        assert [u.chat_id for u in await backend.usage() if u.account == account] == [GROUP]
        # Other chats keep everything.
        assert await backend.get_message(account, GROUP, 2) == message(GROUP, 2)
        assert await backend.set_span(account, GROUP, Span(low=2), group_token)
        # A dropped id is no orphan: the chat can be filled again.
        await backend.put_messages(account, [message(USER, 1)])
        assert await backend.get_message(account, USER, 1) == message(USER, 1)

    # Read marks, chats, usage -----------------------------------------------------------

    async def test_read_marks_only_move_forward(self, backend: CacheBackend, account: str) -> None:
        await backend.mark_read(account, USER, inbox_max_id=10)
        assert await backend.read_marks(account, USER) == ReadMarks(10, 0)
        await backend.mark_read(account, USER, outbox_max_id=7)
        assert await backend.read_marks(account, USER) == ReadMarks(10, 7)
        await backend.mark_read(account, USER, inbox_max_id=4, outbox_max_id=9)
        assert await backend.read_marks(account, USER) == ReadMarks(10, 9)
        await backend.mark_read(account, USER, inbox_max_id=12, outbox_max_id=2)
        assert await backend.read_marks(account, USER) == ReadMarks(12, 9)
        assert await backend.read_marks(account, GROUP) == ReadMarks()

    async def test_chats_lists_every_chat_with_something_cached(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(USER, 1), message(CHANNEL, 1)])
        await backend.mark_read(account, GROUP, inbox_max_id=1)
        assert sorted(await backend.chats(account)) == sorted([USER, GROUP, CHANNEL])

    async def test_usage_counts_live_messages_and_the_last_read(
        self, backend: CacheBackend, account: str
    ) -> None:
        other = account + "-other"
        await backend.put_messages(account, [message(USER, i) for i in (1, 3, 5)])
        await backend.delete_ids(account, [3])
        await backend.put_messages(account, [message(CHANNEL, 1)])
        await backend.put_messages(other, [message(USER, 1)])
        await backend.touch(account, USER, 200.0)
        await backend.touch(account, USER, 150.0)  # an older read never moves it back
        await backend.touch(other, USER, 50.0)
        found = {
            (u.account, u.chat_id): (u.messages, u.last_read)
            for u in await backend.usage()
            if u.account in (account, other)
        }
        assert found == {
            (account, USER): (2, 200.0),
            (account, CHANNEL): (1, 0.0),
            (other, USER): (1, 50.0),
        }

    # Cursor -----------------------------------------------------------------------------

    async def test_a_cursor_only_moves_forward_field_by_field(
        self, backend: CacheBackend, account: str
    ) -> None:
        first = Cursor(pts=10, qts=2, date=DATE, seq=5, channels={CHANNEL: 7}, current_at=100.5)
        await backend.set_cursor(account, first)
        assert await backend.cursor(account) == first
        await backend.set_cursor(
            account,
            Cursor(pts=8, qts=3, date=DATE - 1, seq=6, channels={CHANNEL: 5, -1_002: 4}),
        )
        assert await backend.cursor(account) == Cursor(
            pts=10, qts=3, date=DATE, seq=6, channels={CHANNEL: 7, -1_002: 4}, current_at=100.5
        )
        await backend.set_cursor(account, Cursor(pts=11, channels={CHANNEL: 9}, current_at=200.0))
        cursor = await backend.cursor(account)
        assert cursor is not None
        assert (cursor.pts, dict(cursor.channels), cursor.current_at) == (
            11,
            {CHANNEL: 9, -1_002: 4},
            200.0,
        )

    # Dialogs and entities ---------------------------------------------------------------

    async def test_dialogs_are_pinned_first_then_newest_and_merge_by_top_id(
        self, backend: CacheBackend, account: str
    ) -> None:
        a = CachedDialog(chat_id=USER, top_id=10, top_date=DATE + 10, body=b"a")
        b = CachedDialog(chat_id=GROUP, top_id=20, top_date=DATE + 30, body=b"\x00b")
        c = CachedDialog(chat_id=CHANNEL, top_id=5, top_date=DATE + 20, pinned=True)
        assert not await backend.put_dialogs(account, [a, b, c], span=None, token=None)
        dialogs, _ = await backend.dialogs(account)
        assert dialogs == [c, b, a]
        older = CachedDialog(chat_id=GROUP, top_id=19, top_date=DATE + 99, body=b"old")
        newer = CachedDialog(chat_id=USER, top_id=11, top_date=DATE + 40, body=b"new")
        await backend.put_dialogs(account, [older, newer], span=None, token=None)
        dialogs, _ = await backend.dialogs(account)
        assert dialogs == [c, newer, b]
        # The same top message again replaces (pinning changes keep the top message).
        unpinned = attrs.evolve(c, pinned=False)
        await backend.put_dialogs(account, [unpinned], span=None, token=None)
        dialogs, _ = await backend.dialogs(account)
        assert dialogs == [newer, b, unpinned]

    async def test_the_dialog_span_is_set_by_compare_and_set(
        self, backend: CacheBackend, account: str
    ) -> None:
        d = CachedDialog(chat_id=USER, top_id=1, top_date=DATE)
        _, state = await backend.dialogs(account)
        assert state.span is None
        assert not await backend.put_dialogs(account, [d], span=Span(low=0), token=None)
        assert not await backend.put_dialogs(account, [], span=Span(low=0), token=state.token + "x")
        whole = Span(low=0, from_start=True, anchored_at=5.0)
        assert await backend.put_dialogs(account, [d], span=whole, token=state.token)
        dialogs, after = await backend.dialogs(account)
        assert dialogs == [d]
        assert after.span == whole

    async def test_entities_keep_the_latest_and_answer_only_what_is_stored(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_entities(account, {USER: b"user-v1", CHANNEL: b"\x00\xffchannel"})
        await backend.put_entities(account, {USER: b"user-v2"})
        await backend.put_entities(account, {})
        assert await backend.entities(account, [USER, CHANNEL, GROUP]) == {
            USER: b"user-v2",
            CHANNEL: b"\x00\xffchannel",
        }
        assert await backend.entities(account, [GROUP]) == {}
        assert await backend.entities(account, []) == {}

    # Accounts ---------------------------------------------------------------------------

    async def test_accounts_never_see_each_others_data(
        self, backend: CacheBackend, account: str
    ) -> None:
        # Names that a naive "prefix:account:chat" key would let collide.
        a, b, c = account, f"{account}:m", f"{account}:{USER}"
        await self._fill(backend, a)
        for other in (b, c):
            assert await backend.get_message(other, USER, 1) is None
            assert await backend.history(other, USER, below=None, limit=10) == []
            assert await backend.chats(other) == []
            assert await backend.read_marks(other, USER) == ReadMarks()
            assert await backend.cursor(other) is None
            assert (await backend.dialogs(other))[0] == []
            assert await backend.entities(other, [USER]) == {}
            assert (await backend.span(other, USER)).span is None
            # Deleting the same ids there touches nothing here...
            assert await backend.delete_ids(other, [1, 3]) == []
        assert await backend.get_message(a, USER, 1) == message(USER, 1, pts=1)
        # ...and ids remembered there tombstone nothing here.
        await backend.put_messages(a, [message(USER, 3, pts=2)])
        assert await backend.get_message(a, USER, 3) == message(USER, 3, pts=2)
        # Ending every span there leaves this account's spans and tokens.
        token = (await backend.span(a, GROUP)).token
        await backend.end_spans(b)
        assert (await backend.span(a, USER)).span == Span(low=1)
        assert await backend.set_span(a, GROUP, Span(low=1), token)

    async def test_purge_forgets_one_account_and_fails_its_tokens(
        self, backend: CacheBackend, account: str
    ) -> None:
        other = f"{account}:other"
        await self._fill(backend, account)
        await self._fill(backend, other)
        await backend.delete_ids(account, [99])  # a remembered id goes too
        token = (await backend.span(account, GROUP)).token
        dialog_token = (await backend.dialogs(account))[1].token
        await backend.purge(account)
        assert await backend.get_message(account, USER, 1) is None
        assert await backend.chats(account) == []
        assert await backend.cursor(account) is None
        assert (await backend.dialogs(account))[0] == []
        assert (await backend.dialogs(account))[1].span is None
        assert await backend.entities(account, [USER]) == {}
        assert await backend.read_marks(account, USER) == ReadMarks()
        assert [u for u in await backend.usage() if u.account == account] == []
        assert not await backend.set_span(account, GROUP, Span(low=1), token)
        assert not await backend.put_dialogs(account, [], span=Span(low=0), token=dialog_token)
        await backend.put_messages(account, [message(USER, 99)])
        assert await backend.get_message(account, USER, 99) == message(USER, 99)
        # The other account keeps everything.
        assert await backend.get_message(other, USER, 1) == message(USER, 1, pts=1)
        assert (await backend.span(other, USER)).span == Span(low=1)
        assert await backend.entities(other, [USER]) == {USER: b"me"}
        assert (await backend.dialogs(other))[0] != []
        await backend.purge(account + "-never-seen")  # nothing to forget: no error

    @staticmethod
    async def _fill(backend: CacheBackend, account: str) -> None:
        await backend.put_messages(account, [message(USER, 1, pts=1), message(CHANNEL, 1)])
        await backend.mark_read(account, USER, inbox_max_id=1)
        await backend.set_cursor(account, Cursor(pts=1, channels={CHANNEL: 1}))
        await backend.put_entities(account, {USER: b"me"})
        await backend.touch(account, USER, 1.0)
        dialog = CachedDialog(chat_id=USER, top_id=1, top_date=DATE)
        _, dialog_state = await backend.dialogs(account)
        assert await backend.put_dialogs(account, [dialog], span=Span(0), token=dialog_state.token)
        state = await backend.span(account, USER)
        assert await backend.set_span(account, USER, Span(low=1), state.token)

    # Lifecycle --------------------------------------------------------------------------

    async def test_describe_is_one_line(self, backend: CacheBackend) -> None:
        shown = backend.describe()
        assert isinstance(shown, str)
        assert shown
        assert "\n" not in shown

    # Convergence ------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each subclass gets the property test with its own number of examples.
        super().__init_subclass__(**kwargs)
        name = "test_a_shuffled_replayed_stream_ends_as_the_stream_in_order"
        setattr(cls, name, _property_test(cls.property_examples))


async def _converges(
    self: CacheBackendContract, backend: CacheBackend, streams: tuple[list[Op], list[Op]]
) -> None:
    """A shuffled, partly replayed stream ends as the stream applied in order."""
    in_order, shuffled = streams
    n = next(_accounts)
    a, b = f"prop-{n}-in-order", f"prop-{n}-shuffled"
    await _apply(backend, a, in_order)
    await _apply(backend, b, shuffled)
    for chat_id, message_id in _UNIVERSE:
        want = await backend.get_message(a, chat_id, message_id)
        got = await backend.get_message(b, chat_id, message_id)
        if want is None or want.deleted:
            # A tombstone keeps whichever version was stored when the deletion came.
            assert (got is None or got.deleted) == (want is None or want.deleted)
            assert (got is None) == (want is None)
        else:
            assert got == want
    for chat_id in (USER, GROUP, CHANNEL):
        assert await backend.history(b, chat_id, below=None, limit=100) == (
            await backend.history(a, chat_id, below=None, limit=100)
        )
        assert await backend.read_marks(b, chat_id) == await backend.read_marks(a, chat_id)
    assert await backend.cursor(b) == await backend.cursor(a)
    await backend.purge(a)
    await backend.purge(b)


def _property_test(examples: int) -> Any:
    return settings(_PROPERTY, max_examples=examples)(given(streams=message_streams())(_converges))
