"""The read rules of the cache contract suite (a part of `CacheBackendContract`):
`CacheBackend.read_history` answers what the calls it stands for answer."""

from __future__ import annotations

from ..cache._backend import CacheBackend, HistoryRead, Span
from ._cache_data import CHANNEL, GROUP, USER, message

__all__ = ["ReadRules"]


async def _both(backend: CacheBackend, account: str, chat_id: int, **kw: object) -> HistoryRead:
    """The backend's read_history, checked against the ABC's default (the separate
    calls: span, history, entities) on the same state."""
    got = await backend.read_history(account, chat_id, **kw)  # type: ignore[arg-type]
    want = await CacheBackend.read_history(backend, account, chat_id, **kw)  # type: ignore[arg-type]
    assert got == want, (chat_id, kw)
    return got


class ReadRules:
    """`read_history` agrees with span + history + entities (+ touch) on every state."""

    async def test_read_history_agrees_with_the_separate_calls(
        self, backend: CacheBackend, account: str
    ) -> None:
        peers = [USER, GROUP, CHANNEL, 999]
        for chat_id in (USER, CHANNEL):  # an account and chats never seen
            read = await _both(backend, account, chat_id, below=None, limit=10, peers=peers)
            assert read.state.span is None
            assert read.messages == []
            assert read.entities == {}
        await backend.put_messages(account, [message(USER, i, pts=i) for i in range(1, 31)])
        await backend.put_messages(account, [message(USER, 7, deleted=True)])
        await backend.put_messages(account, [message(CHANNEL, i) for i in (5, 6)])
        await backend.delete_ids(account, [12])
        await backend.put_messages(account, [message(USER, 3, edit_date=9, pts=40)])
        await backend.put_entities(account, {USER: b"\x00user", CHANNEL: b"channel"})
        cases: list[dict[str, object]] = [
            {"below": None, "limit": 10},
            {"below": None, "limit": 100},
            {"below": 14, "limit": 5},
            {"below": 8, "limit": 20},
            {"below": 1, "limit": 5},
            {"below": None, "limit": 1, "peers": peers},
            {"below": 20, "limit": 3, "peers": [USER, USER, 999]},
        ]
        for case in cases:
            read = await _both(backend, account, USER, **case)
            assert read.state.span is None
        read = await _both(backend, account, USER, below=14, limit=5, peers=peers)
        assert [m.id for m in read.messages] == [13, 11, 10, 9, 8]
        assert read.entities == {USER: b"\x00user", CHANNEL: b"channel"}
        read = await _both(backend, account, USER, below=None, limit=100)
        assert 7 not in [m.id for m in read.messages]
        assert read.messages[-1] == message(USER, 1, pts=1)
        assert [m for m in read.messages if m.id == 3] == [message(USER, 3, edit_date=9, pts=40)]
        assert [
            m.id for m in (await _both(backend, account, CHANNEL, below=None, limit=5)).messages
        ] == [6, 5]
        # Spans, and their ends.
        state = await backend.span(account, USER)
        assert await backend.set_span(account, USER, Span(10, True, 12.5), state.token)
        read = await _both(backend, account, USER, below=None, limit=5)
        assert read.state.span == Span(10, True, 12.5)
        await backend.trim(account, USER, 20)
        read = await _both(backend, account, USER, below=None, limit=50)
        assert read.state.span is not None
        assert len(read.messages) == 20
        await backend.end_spans(account, [USER])
        assert (await _both(backend, account, USER, below=None, limit=5)).state.span is None
        await backend.end_spans(account)
        await _both(backend, account, CHANNEL, below=None, limit=5)
        await backend.drop_chat(account, CHANNEL)
        assert (await _both(backend, account, CHANNEL, below=None, limit=5)).messages == []
        await backend.purge(account)
        assert (await _both(backend, account, USER, below=None, limit=5, peers=peers)) == (
            HistoryRead((await backend.span(account, USER)), [], {})
        )

    async def test_read_history_tokens_are_span_tokens(
        self, backend: CacheBackend, account: str
    ) -> None:
        await backend.put_messages(account, [message(GROUP, 1)])
        read = await backend.read_history(account, GROUP, below=None, limit=5)
        assert read.state == await backend.span(account, GROUP)
        assert await backend.set_span(account, GROUP, Span(low=1), read.state.token)
        again = await backend.read_history(account, GROUP, below=None, limit=5)
        assert again.state.span == Span(low=1)
        await backend.end_spans(account, [GROUP])
        assert not await backend.set_span(account, GROUP, Span(low=1), again.state.token)

    async def test_read_history_touch_records_a_read_and_never_moves_back(
        self, backend: CacheBackend, account: str
    ) -> None:
        other = account + "-other"
        await backend.put_messages(account, [message(USER, 1)])
        await backend.read_history(account, USER, below=None, limit=5, touch=200.0)
        await backend.read_history(account, USER, below=None, limit=5, touch=150.0)
        await backend.read_history(account, GROUP, below=None, limit=5)  # no touch
        await backend.read_history(other, USER, below=None, limit=5, touch=50.0)
        found = {
            (u.account, u.chat_id): (u.messages, u.last_read)
            for u in await backend.usage()
            if u.account in (account, other)
        }
        assert found == {(account, USER): (1, 200.0), (other, USER): (0, 50.0)}
        await backend.purge(other)
