"""Test data of the cache contract suite: sample chats, messages and update streams."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from ..cache._backend import CacheBackend, CachedMessage, Cursor

__all__ = [
    "CHANNEL",
    "DATE",
    "GROUP",
    "UNIVERSE",
    "USER",
    "Op",
    "apply_ops",
    "fresh_account",
    "message",
    "message_streams",
]

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
UNIVERSE = (
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
    keys = draw(st.lists(st.sampled_from(UNIVERSE), min_size=1, max_size=6, unique=True))
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


async def apply_ops(backend: CacheBackend, account: str, ops: list[Op]) -> None:
    for op in ops:
        if op[0] == "put":
            await backend.put_messages(account, op[1])
        elif op[0] == "delete":
            await backend.delete_ids(account, op[1], op[2])
        elif op[0] == "cursor":
            await backend.set_cursor(account, op[1])
        else:
            await backend.mark_read(account, op[1], inbox_max_id=op[2], outbox_max_id=op[3])


def fresh_account(stem: str = "acct") -> str:
    """An account name no other test of this process uses."""
    return f"{stem}-{next(_accounts)}"
