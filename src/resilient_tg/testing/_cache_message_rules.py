"""The message rules of the cache contract suite (a part of `CacheBackendContract`)."""

from __future__ import annotations

from ..cache._backend import ORPHAN_TOMBSTONES, CacheBackend, CachedMessage, ReadMarks, Span
from ._cache_data import CHANNEL, DATE, GROUP, USER, message

__all__ = ["MessageRules"]


class MessageRules:
    """Merging by version, deletion by id alone, history and trim."""

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
