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
- `read_history` answers exactly what the calls it stands for answer (`span`, then
  `history`, `entities` and `touch`), on empty, filled, spanned, trimmed, ended,
  dropped and purged chats;
- read marks and cursors (common and per-channel pts) only move forward; dialogs are
  ordered pinned first, then by top message, and merge by ``top_id``; entities; usage;
- accounts never mix (names with ``:`` included), and `purge` forgets one account only;
- a random stream of puts, deletions, cursor moves and read marks, shuffled and partly
  replayed, ends in the same state as the stream applied in order (hypothesis).

Racing processes are not covered here: a backend shared by processes should also be
tested with real processes applying one stream, as resilient_tg's own tests do.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from ..cache._backend import CacheBackend, CachedDialog, Cursor, ReadMarks, Span
from ._cache_data import (
    CHANNEL,
    DATE,
    GROUP,
    UNIVERSE,
    USER,
    Op,
    apply_ops,
    fresh_account,
    message,
    message_streams,
)
from ._cache_message_rules import MessageRules
from ._cache_read_rules import ReadRules

__all__ = ["CHANNEL", "GROUP", "USER", "CacheBackendContract", "message", "message_streams"]


_PROPERTY = settings(
    max_examples=30,
    deadline=None,
    # One backend serves every example (each in accounts of its own); slow is no error.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.anyio
class CacheBackendContract(MessageRules, ReadRules):
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
        return fresh_account()

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
    stem = fresh_account("prop")
    a, b = f"{stem}-in-order", f"{stem}-shuffled"
    await apply_ops(backend, a, in_order)
    await apply_ops(backend, b, shuffled)
    for chat_id, message_id in UNIVERSE:
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
