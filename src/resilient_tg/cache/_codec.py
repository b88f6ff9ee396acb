"""Between Telethon objects and what a CacheBackend stores: TL bytes, sealed on request.

A message is kept as its TL serialization (``bytes(message)``), so a read rebuilds a real
Telethon ``Message`` (BinaryReader, then ``_finish_init`` with the cached users and
chats). With a key, bodies and entities are sealed with the stores' AES-GCM `Encryptor`
(the context names the account, so a body cannot be moved to another account).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from telethon import utils
from telethon.extensions import BinaryReader
from telethon.tl import types

from .._errors import CacheCorruptError, SessionCorruptError
from ..stores._encryption import Encryptor
from ._backend import CacheBackend, CachedMessage, HistoryRead

__all__ = [
    "Codec",
    "PeerHints",
    "load_messages",
    "load_read",
    "peer_ids_of",
    "raw_entities",
    "timestamp",
]

_MESSAGES = (types.Message, types.MessageService)
_ENTITIES = (types.User, types.Chat, types.Channel, types.ChatForbidden, types.ChannelForbidden)


def raw_entities(objects: Iterable[Any]) -> dict[int, bytes]:
    """Full users and chats (not "min" ones) by marked id, as TL bytes."""
    found: dict[int, bytes] = {}
    for entity in objects:
        if isinstance(entity, _ENTITIES) and not getattr(entity, "min", False):
            found[int(utils.get_peer_id(entity))] = bytes(entity)
    return found


def timestamp(value: Any) -> int:
    """A TL date (datetime, int or None) as Unix seconds."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    return int(value or 0)


def peer_ids_of(message: Any) -> set[int]:
    """The marked ids a message refers to (its chat, sender, forward source)."""
    ids: set[int] = set()
    for peer in (
        getattr(message, "peer_id", None),
        getattr(message, "from_id", None),
        getattr(getattr(message, "fwd_from", None), "from_id", None),
    ):
        if peer is not None:
            ids.add(int(utils.get_peer_id(peer)))
    return ids


class Codec:
    """Turns messages and entities into backend records and back, for one account."""

    def __init__(self, account: str, key: bytes | None, backend_name: str) -> None:
        self._seal = Encryptor(key, context=f"resilient_tg.cache:{account}") if key else None
        self._where = backend_name

    @property
    def sealed(self) -> bool:
        return self._seal is not None

    def record(self, message: Any, pts: int) -> CachedMessage | None:
        """A live record of a Telethon message (None for MessageEmpty and the unknown)."""
        if not isinstance(message, _MESSAGES) or getattr(message, "peer_id", None) is None:
            return None
        return CachedMessage(
            chat_id=int(utils.get_peer_id(message.peer_id)),
            id=int(message.id),
            date=timestamp(message.date),
            edit_date=timestamp(getattr(message, "edit_date", None)),
            pts=int(pts),
            body=self._pack(bytes(message)),
        )

    def entities(self, objects: Iterable[Any]) -> dict[int, bytes]:
        """Users and chats by marked id, ready for `CacheBackend.put_entities`."""
        return {peer_id: self.pack(raw) for peer_id, raw in raw_entities(objects).items()}

    def pack(self, raw: bytes) -> bytes:
        """TL bytes as stored: sealed when the cache encrypts."""
        return self._pack(raw)

    def parse(self, record: CachedMessage) -> Any:
        """The Telethon message of a record (users and chats not filled in yet)."""
        message = self._object(record.body)
        if not isinstance(message, _MESSAGES):
            raise CacheCorruptError(
                f"{self._where}: cached message {record.id} of chat {record.chat_id} is not "
                "a message",
                backend=self._where,
            )
        return message

    def message(self, record: CachedMessage, entities: Mapping[int, bytes], client: Any) -> Any:
        """The Telethon message of a live record, its users and chats filled in."""
        message = self.parse(record)
        known = {peer_id: self._object(body) for peer_id, body in entities.items()}
        message._finish_init(client, known, None)
        return message

    def entity(self, body: bytes) -> Any:
        return self._object(body)

    def _pack(self, raw: bytes) -> bytes:
        return self._seal.seal(raw) if self._seal is not None else raw

    def _object(self, body: bytes) -> Any:
        raw = body
        if self._seal is not None:
            try:
                raw = self._seal.open(body, source=self._where)
            except SessionCorruptError:
                raise CacheCorruptError(
                    f"{self._where}: a cached entry cannot be decrypted (another key, an "
                    "unencrypted cache, or altered data)",
                    backend=self._where,
                ) from None
        try:
            with BinaryReader(raw) as reader:
                return reader.tgread_object()
        except Exception as exc:  # noqa: BLE001 - any parse failure means the same
            raise CacheCorruptError(
                f"{self._where}: a cached entry is not valid TL ({type(exc).__name__})",
                backend=self._where,
            ) from None


async def load_messages(
    backend: CacheBackend, account: str, codec: Codec, records: list[CachedMessage], client: Any
) -> list[Any]:
    """Telethon messages of live records, their chats, senders and forward sources filled
    in from the cached entities (one backend read)."""
    messages = [codec.parse(record) for record in records]
    wanted = _wanted(messages)
    stored = await backend.entities(account, wanted) if wanted else {}
    return _finish(codec, messages, stored, client)


async def load_read(
    backend: CacheBackend,
    account: str,
    codec: Codec,
    read: HistoryRead,
    asked: Iterable[int],
    client: Any,
) -> tuple[list[Any], set[int]]:
    """`load_messages` for a `HistoryRead` whose entities are those among ``asked``: only
    the peers not asked for are read (another backend call); also the peers wanted."""
    messages = [codec.parse(record) for record in read.messages]
    wanted = _wanted(messages)
    missing = wanted.difference(asked)
    stored = {k: v for k, v in read.entities.items() if k in wanted}
    if missing:
        stored.update(await backend.entities(account, missing))
    return _finish(codec, messages, stored, client), wanted


class PeerHints:
    """The peers each chat's messages referred to on its last read (the chat itself when
    never read): asked for with the next read, so that it needs no entities call of its
    own. Bounded: the least recently read chats are forgotten first."""

    def __init__(self, chats: int = 1000, peers: int = 200) -> None:
        self._chats, self._peers = chats, peers
        self._hints: OrderedDict[int, frozenset[int]] = OrderedDict()

    def get(self, chat_id: int) -> frozenset[int]:
        return self._hints.get(chat_id) or frozenset({chat_id})

    def remember(self, chat_id: int, wanted: set[int]) -> None:
        if len(wanted) > self._peers:
            wanted = set(sorted(wanted)[: self._peers])
        self._hints[chat_id] = frozenset(wanted | {chat_id})
        self._hints.move_to_end(chat_id)
        while len(self._hints) > self._chats:
            self._hints.popitem(last=False)


def _wanted(messages: list[Any]) -> set[int]:
    wanted: set[int] = set()
    for message in messages:
        wanted |= peer_ids_of(message)
    return wanted


def _finish(
    codec: Codec, messages: list[Any], stored: Mapping[int, bytes], client: Any
) -> list[Any]:
    known = {peer_id: codec.entity(body) for peer_id, body in stored.items()}
    for message in messages:
        message._finish_init(client, known, None)
    return messages
