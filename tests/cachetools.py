"""Helpers for MessageCache tests: a world of accounts and chats, a cached client, and a
message-by-message comparison of the cache with the server's history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from telethon import utils
from telethon.tl import functions, types

from resilient_tg import ResilientClient
from resilient_tg.cache import CacheBackend, MemoryCacheBackend, MessageCache
from resilient_tg.stores import SessionStore
from resilient_tg.testing import MTProtoTestServer, TestChannel, TestGroup, TestUser

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, Recorder


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

    async def send(self, chat_id: int, text: str, sender: int | None = None) -> None:
        """A new message in one of the chats, from Bob (or ``sender``)."""
        sender = sender or self.bob.id
        if chat_id == self.private_id:
            await self.server.send_message(sender, self.alice.id, text)
        elif chat_id == self.group_id:
            await self.server.post(self.group.id, sender, text)
        else:
            await self.server.post(self.room.id, sender, text)

    def where(self, chat_id: int) -> int:
        """`edit_message`/`delete_messages`'s ``where`` for Alice's copy of a chat."""
        return self.room.id if chat_id == self.room_id else self.alice.id

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        await self.server.edit_message(self.where(chat_id), message_id, text)

    async def delete(self, chat_id: int, message_ids: list[int]) -> None:
        await self.server.delete_messages(self.where(chat_id), message_ids)


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


async def settle() -> None:
    await asyncio.sleep(0)
