"""SessionData: everything Telethon needs to resume a session, as one frozen value.

Stores persist it with `encode` / `decode`, a versioned JSON document, so
that every store shares one format and one set of checks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import SessionCorruptError

__all__ = ["FORMAT_VERSION", "Entity", "SessionData", "UpdateState", "decode", "encode"]

FORMAT_VERSION = 1
AUTH_KEY_SIZE = 256
_INT64 = (-(2**63), 2**63 - 1)


def _check_int64(name: str, value: int) -> None:
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {value}")


def _freeze_channels(value: Mapping[int, int] | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in (value or {}).items()}


@attrs.frozen
class UpdateState:
    """Where the update stream stands: the account's pts/qts/date/seq and each channel's pts."""

    pts: int = 0
    qts: int = 0
    date: int = 0
    seq: int = 0
    channels: dict[int, int] = attrs.field(factory=dict, converter=_freeze_channels)

    def __attrs_post_init__(self) -> None:
        for name in ("pts", "qts", "date", "seq"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
                raise ValueError(f"UpdateState.{name} must be an int in 0..2^31-1, got {value!r}")
        for channel_id, pts in self.channels.items():
            _check_int64("UpdateState.channels key", channel_id)
            if channel_id < 1:
                # 0 is the account's own entry in Telethon's update state.
                raise ValueError(
                    f"UpdateState.channels keys are channel ids >= 1, got {channel_id}"
                )
            if not 0 <= pts < 2**31:
                raise ValueError(f"UpdateState.channels[{channel_id}] must be in 0..2^31-1")


@attrs.frozen
class Entity:
    """A cached peer: Telethon's marked id, access hash, and what it can be looked up by."""

    id: int
    access_hash: int
    username: str | None = None
    phone: str | None = None
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_int64("Entity.id", self.id)
        _check_int64("Entity.access_hash", self.access_hash)


def _check_auth_key(instance: Any, attribute: Any, value: bytes | None) -> None:
    if value is None:
        return
    if not isinstance(value, bytes) or len(value) != AUTH_KEY_SIZE:
        size = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise ValueError(f"SessionData.auth_key must be {AUTH_KEY_SIZE} bytes or None, got {size}")


def _entities(value: Any) -> tuple[Entity, ...]:
    return tuple(value)


@attrs.frozen
class SessionData:
    """What a session store keeps. Every field but the first three has a default.

    ``auth_key`` never appears in the repr.
    """

    dc_id: int
    server_address: str
    port: int
    auth_key: bytes | None = attrs.field(default=None, repr=False, validator=_check_auth_key)
    takeout_id: int | None = None
    update_state: UpdateState | None = None
    entities: tuple[Entity, ...] = attrs.field(default=(), converter=_entities)
    version: int = FORMAT_VERSION

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.dc_id, int) or isinstance(self.dc_id, bool) or self.dc_id < 1:
            raise ValueError(f"SessionData.dc_id must be a positive int, got {self.dc_id!r}")
        if not isinstance(self.server_address, str) or not self.server_address:
            raise ValueError("SessionData.server_address must be a non-empty string")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"SessionData.port must be in 1..65535, got {self.port!r}")
        if self.takeout_id is not None:
            _check_int64("SessionData.takeout_id", self.takeout_id)
        if self.version != FORMAT_VERSION:
            raise ValueError(
                f"SessionData.version {self.version} is not supported (this is {FORMAT_VERSION})"
            )


def encode(data: SessionData) -> bytes:
    """The versioned JSON document every built-in store writes."""
    state = data.update_state
    doc: dict[str, Any] = {
        "format": "resilient_tg.session",
        "version": data.version,
        "dc_id": data.dc_id,
        "server_address": data.server_address,
        "port": data.port,
        "auth_key": base64.b64encode(data.auth_key).decode() if data.auth_key else None,
        "takeout_id": data.takeout_id,
        "update_state": None
        if state is None
        else {
            "pts": state.pts,
            "qts": state.qts,
            "date": state.date,
            "seq": state.seq,
            "channels": {str(k): v for k, v in state.channels.items()},
        },
        "entities": [[e.id, e.access_hash, e.username, e.phone, e.name] for e in data.entities],
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes, *, source: str) -> SessionData:
    """Parse `encode` output; anything else is a SessionCorruptError naming ``source``."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionCorruptError(
            f"{source}: not a session document (invalid JSON at byte {_pos(exc)}); "
            "it may be truncated or not written by resilient_tg",
            store=source,
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != "resilient_tg.session":
        raise SessionCorruptError(f"{source}: not a resilient_tg session document", store=source)
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise SessionCorruptError(
            f"{source}: session format version {version!r} is not supported "
            f"(this version of resilient_tg reads {FORMAT_VERSION})",
            store=source,
        )
    try:
        key = doc["auth_key"]
        raw_state = doc["update_state"]
        state = None
        if raw_state is not None:
            state = UpdateState(
                pts=_int(raw_state["pts"]),
                qts=_int(raw_state["qts"]),
                date=_int(raw_state["date"]),
                seq=_int(raw_state["seq"]),
                channels={int(k): _int(v) for k, v in dict(raw_state["channels"]).items()},
            )
        entities = tuple(
            Entity(
                id=_int(row[0]),
                access_hash=_int(row[1]),
                username=_opt_str(row[2]),
                phone=_opt_str(row[3]),
                name=_opt_str(row[4]),
            )
            for row in doc["entities"]
        )
        return SessionData(
            dc_id=_int(doc["dc_id"]),
            server_address=str(doc["server_address"]),
            port=_int(doc["port"]),
            auth_key=None if key is None else base64.b64decode(key, validate=True),
            takeout_id=None if doc["takeout_id"] is None else _int(doc["takeout_id"]),
            update_state=state,
            entities=entities,
            version=FORMAT_VERSION,
        )
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        # The message names the field, never its value (it could be the key).
        raise SessionCorruptError(
            f"{source}: session document has a missing or invalid field ({_field_of(exc)})",
            store=source,
        ) from None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("expected a string or null")
    return value


def _pos(exc: Exception) -> int:
    return int(getattr(exc, "pos", getattr(exc, "start", 0)))


def _field_of(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    if isinstance(exc, binascii.Error):
        return "auth_key is not base64"
    text = str(exc)
    # attrs/our validators name the field first ("SessionData.port must be...").
    return text.split(" must ")[0] if " must " in text else type(exc).__name__
