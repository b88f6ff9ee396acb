"""Helpers for MessageCache tests: a world of accounts and chats, a cached client, and a
message-by-message comparison of the cache with the server's history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from telethon import utils
from telethon.tl import functions, types

from resilient_tg import ResilientClient, _compat
from resilient_tg.cache import CacheBackend, MemoryCacheBackend, MessageCache
from resilient_tg.stores import SessionStore
from resilient_tg.testing import MTProtoTestServer, TestChannel, TestGroup, TestUser

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, Recorder
from .conftest import STEP_TIMEOUT


class ChatWorld:
    """Alice (the cached account), Bob and Carol; a basic group and a supergroup."""

    def __init__(self, server: MTProtoTestServer) -> None:
        self.server = server
        self.alice: TestUser = server.create_user("+15550001", "Alice")
        self.bob: TestUser = server.create_user("+15550002", "Bob")
        self.carol: TestUser = server.create_user("+15550003", "Carol")
        self.group: TestGroup = server.create_group(
            self.bob.id, "Group", [self.alice.id, self.carol.id]
        )
        self.room: TestChannel = server.create_channel(
            self.bob.id, "Room", megagroup=True, members=[self.alice.id, self.carol.id]
        )

    @property
    def private_id(self) -> int:
        return self.bob.id

    @property
    def group_id(self) -> int:
        return int(utils.get_peer_id(types.PeerChat(self.group.id)))

    @property
    def room_id(self) -> int:
        return int(utils.get_peer_id(types.PeerChannel(self.room.id)))

    def chats(self) -> list[int]:
        return [self.private_id, self.group_id, self.room_id]

    async def send(self, chat_id: int, text: str) -> tuple[int, int]:
        """A new message from Bob in one of the chats; returns (where, id) for `edit` and
        `delete` (a box and an id in it, or the channel and its id)."""
        if chat_id == self.private_id:
            return self.alice.id, await self.server.send_message(self.bob.id, self.alice.id, text)
        if chat_id == self.group_id:
            return self.bob.id, await self.server.post(self.group.id, self.bob.id, text)
        return self.room.id, await self.server.post(self.room.id, self.bob.id, text)

    async def edit(self, handle: tuple[int, int], text: str) -> None:
        await self.server.edit_message(handle[0], handle[1], text)

    async def delete(self, handle: tuple[int, int]) -> None:
        await self.server.delete_messages(handle[0], [handle[1]])

    async def caught_up(self, client: ResilientClient, limit: float = STEP_TIMEOUT) -> None:
        """Wait until Alice's client applied everything the server has for her (account
        pts and the supergroup's pts) and her cache wrote it."""
        cache = client.cache
        assert cache is not None
        with anyio.fail_after(limit):
            while True:
                state = await client.telegram(functions.updates.GetStateRequest())
                telegram = client.telegram
                room = _compat.box_pts(telegram, self.room.id)  # 0: not followed yet
                if (
                    _compat.box_pts(telegram, None) >= state.pts
                    and (room == 0 or room >= self.server.channel_pts(self.room.id))
                    and cache._queue.idle.is_set()
                ):
                    return
                await asyncio.sleep(0.02)  # polling a condition (no event to await)


@contextlib.asynccontextmanager
async def cached_client(
    store: SessionStore,
    server: MTProtoTestServer,
    backend: CacheBackend | None = None,
    *,
    cache: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[ResilientClient, Recorder, MessageCache]]:
    """A running client (fast policies, as `running`) with a MessageCache attached."""
    kwargs.setdefault("keepalive", FAST_KEEPALIVE)
    kwargs.setdefault("reconnect", FAST_RECONNECT)
    kwargs.setdefault("shutdown_timeout", 5.0)
    client = ResilientClient(store, server.api_id, server.api_hash, **kwargs)
    recorder = Recorder(client)
    message_cache = MessageCache(client, backend or MemoryCacheBackend(), **(cache or {}))
    async with client:
        yield client, recorder, message_cache


async def server_history(client: ResilientClient, chat_id: int, limit: int = 100) -> list[Any]:
    """The chat's newest messages straight from the server (newest first)."""
    peer = await client.telegram.get_input_entity(chat_id)
    answer = await client.telegram(
        functions.messages.GetHistoryRequest(
            peer=peer,
            offset_id=0,
            offset_date=None,
            add_offset=0,
            limit=limit,
            max_id=0,
            min_id=0,
            hash=0,
        )
    )
    return [m for m in answer.messages if isinstance(m, (types.Message, types.MessageService))]


def same(a: Any, b: Any) -> bool:
    """Two messages equal as Telegram would show them (id, text, edit date, kind)."""
    return (
        type(a) is type(b)
        and a.id == b.id
        and getattr(a, "message", None) == getattr(b, "message", None)
        and getattr(a, "edit_date", None) == getattr(b, "edit_date", None)
    )


async def assert_cache_equals_server(
    client: ResilientClient, chats: list[int], *, from_cache: bool = True
) -> None:
    """Every chat's cached history equals the server's, message by message."""
    cache = client.cache
    assert cache is not None
    for chat_id in chats:
        truth = await server_history(client, chat_id)
        answer = await cache.history(chat_id, limit=100)
        if from_cache:
            assert answer.from_cache, f"chat {chat_id}: not answered from the cache"
        assert not answer.stale
        got = [(m.id, m.message) for m in answer.value]
        want = [(m.id, getattr(m, "message", None)) for m in truth]
        assert got == want, f"chat {chat_id}: cache {got[:5]}... != server {want[:5]}..."
        assert all(same(a, b) for a, b in zip(answer.value, truth, strict=True))
