"""SessionData: everything Telethon needs to resume a session, as one frozen value.

Stores persist it with `encode` / `decode`, a versioned JSON document, so that every
store shares one format and one set of checks. Decoding is strict: a field of the
wrong type or out of range, a duplicate or unknown key is a SessionCorruptError
naming the field (never its value), not a value coerced into something else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from .._errors import SessionCorruptError

__all__ = ["FORMAT_VERSION", "Entity", "SessionData", "UpdateState", "decode", "encode"]

#: Version 2 added ``ever_authorized``; version 1 documents are still read.
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
AUTH_KEY_SIZE = 256
_INT64 = (-(2**63), 2**63 - 1)
_INT32_POSITIVE = (1, 2**31 - 1)
_UINT31 = (0, 2**31 - 1)
_PORT = (1, 65535)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not _is_int(value) or not low <= value <= high:
        # The value is not shown: an access hash is a secret of sorts.
        shown = "an int out of range" if _is_int(value) else type(value).__name__
        raise ValueError(f"{name} must be an int in {low}..{high}, got {shown}")


def _check_int64(name: str, value: Any) -> None:
    _check_int(name, value, _INT64)


def _check_opt_str(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {type(value).__name__}")


def _freeze_channels(value: Mapping[int, int] | None) -> dict[int, int]:
    return dict(value or {})


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
            _check_int(f"UpdateState.{name}", getattr(self, name), _UINT31)
        for channel_id, pts in self.channels.items():
            # 0 is the account's own entry in Telethon's update state: channel ids are >= 1.
            _check_int("UpdateState.channels key", channel_id, (1, _INT64[1]))
            _check_int(f"UpdateState.channels[{channel_id}]", pts, _UINT31)


@attrs.frozen
class Entity:
    """A cached peer: Telethon's marked id, access hash, and what it can be looked up by.

    The access hash and the phone number never appear in the repr.
    """

    id: int
    access_hash: int = attrs.field(repr=False)
    username: str | None = None
    phone: str | None = attrs.field(default=None, repr=False)
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_int64("Entity.id", self.id)
        _check_int64("Entity.access_hash", self.access_hash)
        for name in ("username", "phone", "name"):
            _check_opt_str(f"Entity.{name}", getattr(self, name))


def _check_auth_key(instance: Any, attribute: Any, value: bytes | None) -> None:
    if value is None:
        return
    if not isinstance(value, bytes) or len(value) != AUTH_KEY_SIZE:
        size = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise ValueError(f"SessionData.auth_key must be {AUTH_KEY_SIZE} bytes or None, got {size}")


def _entities(value: Any) -> tuple[Entity, ...]:
    return tuple(value)


def _entities_repr(value: tuple[Entity, ...]) -> str:
    return f"<{len(value)} cached>"


@attrs.frozen
class SessionData:
    """What a session store keeps. Every field but the first three has a default.

    ``ever_authorized`` says whether ``auth_key`` was ever logged in: the server answers
    a never-authorized key and a revoked one alike (401), and only the second is lost.
    The repr shows neither the auth key nor the cached entities (phone numbers, access
    hashes), only how many there are.
    """

    dc_id: int
    server_address: str
    port: int
    auth_key: bytes | None = attrs.field(default=None, repr=False, validator=_check_auth_key)
    takeout_id: int | None = None
    update_state: UpdateState | None = None
    entities: tuple[Entity, ...] = attrs.field(default=(), converter=_entities, repr=_entities_repr)
    ever_authorized: bool = False
    version: int = FORMAT_VERSION

    def __attrs_post_init__(self) -> None:
        _check_int("SessionData.dc_id", self.dc_id, _INT32_POSITIVE)
        if not isinstance(self.server_address, str) or not self.server_address:
            raise ValueError("SessionData.server_address must be a non-empty string")
        _check_int("SessionData.port", self.port, _PORT)
        if self.takeout_id is not None:
            _check_int64("SessionData.takeout_id", self.takeout_id)
        if self.update_state is not None and not isinstance(self.update_state, UpdateState):
            raise ValueError("SessionData.update_state must be an UpdateState or None")
        for entity in self.entities:
            if not isinstance(entity, Entity):
                raise TypeError("SessionData.entities must hold Entity values")
        if not isinstance(self.ever_authorized, bool):
            raise TypeError("SessionData.ever_authorized must be a bool")
        if self.ever_authorized and self.auth_key is None:
            raise ValueError("SessionData.ever_authorized must be False without an auth_key")
        if self.version != FORMAT_VERSION or not _is_int(self.version):
            raise ValueError(
                f"SessionData.version {self.version!r} is not supported (this is {FORMAT_VERSION})"
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
        "ever_authorized": data.ever_authorized,
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


# Decoding ---------------------------------------------------------------------------------

_V1_FIELDS = frozenset(
    {
        "format",
        "version",
        "dc_id",
        "server_address",
        "port",
        "auth_key",
        "takeout_id",
        "update_state",
        "entities",
    }
)
_FIELDS = {1: _V1_FIELDS, 2: _V1_FIELDS | {"ever_authorized"}}
_STATE_FIELDS = frozenset({"pts", "qts", "date", "seq", "channels"})
_KNOWN_NAMES = _FIELDS[2] | _STATE_FIELDS
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_CHANNEL_KEY = re.compile(r"[1-9][0-9]{0,18}")


class _Invalid(Exception):
    """A field of the document is wrong: ``field`` names it, ``why`` says how (no value)."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(field, why)
        self.field = field
        self.why = why


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error (json.loads would keep the last)."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _Duplicate(key)
        doc[key] = value
    return doc


def _key_name(key: str) -> str:
    """A key as an error may show it: known names and short identifiers only."""
    return repr(key) if key in _KNOWN_NAMES or _NAME.fullmatch(key) else "a key"


def decode(raw: bytes, *, source: str) -> SessionData:
    """Parse `encode` output (this version's or version 1's); anything else is a
    SessionCorruptError naming ``source`` and the field, never its value."""
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise SessionCorruptError(
            f"{source}: session document has the field {_key_name(dup.key)} twice",
            store=source,
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionCorruptError(
            f"{source}: not a session document (invalid JSON at byte {_pos(exc)}); "
            "it may be truncated or not written by resilient_tg",
            store=source,
        ) from None
    except (RecursionError, ValueError):
        raise SessionCorruptError(
            f"{source}: not a session document (unreadable JSON)", store=source
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != "resilient_tg.session":
        raise SessionCorruptError(f"{source}: not a resilient_tg session document", store=source)
    version = doc.get("version")
    if not _is_int(version) or version not in _READABLE_VERSIONS:
        shown = version if _is_int(version) else type(version).__name__
        raise SessionCorruptError(
            f"{source}: session format version {shown} is not supported "
            f"(this version of resilient_tg reads {', '.join(map(str, _READABLE_VERSIONS))})",
            store=source,
        )
    try:
        return _decode_fields(doc, version)
    except _Invalid as exc:
        field, why = exc.field, exc.why
    except (TypeError, ValueError) as exc:  # SessionData's checks: they name no value
        field, why = str(exc).partition(" must ")[0], "is invalid"
    raise SessionCorruptError(
        f"{source}: session document has a missing or invalid field ({field}: {why})",
        store=source,
    )


def _decode_fields(doc: dict[str, Any], version: int) -> SessionData:
    fields = _FIELDS[version]
    for key in doc:
        if key not in fields:
            raise _Invalid(_key_name(key), "not a field of this format version")
    key = _field(doc, "auth_key")
    auth_key: bytes | None = None
    if key is not None:
        if not isinstance(key, str):
            _fail("auth_key", "must be a base64 string or null")
        try:
            auth_key = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            _fail("auth_key", "is not base64")
        if len(auth_key) != AUTH_KEY_SIZE:
            _fail("auth_key", f"must decode to {AUTH_KEY_SIZE} bytes")
    if version == 1:
        # Version 1 did not record it: a stored key counts as authorized (a revoked key is
        # then reported as lost, never silently replaced).
        ever_authorized = auth_key is not None
    else:
        ever_authorized = _field(doc, "ever_authorized")
        if not isinstance(ever_authorized, bool):
            _fail("ever_authorized", "must be true or false")
        if ever_authorized and auth_key is None:
            _fail("ever_authorized", "is true without an auth_key")
    server_address = _field(doc, "server_address")
    if not isinstance(server_address, str) or not server_address:
        _fail("server_address", "must be a non-empty string")
    takeout = _field(doc, "takeout_id")
    return SessionData(
        dc_id=_int(_field(doc, "dc_id"), "dc_id", _INT32_POSITIVE),
        server_address=server_address,
        port=_int(_field(doc, "port"), "port", _PORT),
        auth_key=auth_key,
        takeout_id=None if takeout is None else _int(takeout, "takeout_id", _INT64),
        update_state=_update_state(_field(doc, "update_state")),
        entities=_entity_rows(_field(doc, "entities")),
        ever_authorized=ever_authorized,
    )


def _update_state(raw: Any) -> UpdateState | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        _fail("update_state", "must be an object or null")
    for key in raw:
        if key not in _STATE_FIELDS:
            _fail(f"update_state.{_key_name(key)}", "not a field of the update state")
    values = {
        name: _int(_field(raw, name, "update_state."), f"update_state.{name}", _UINT31)
        for name in ("pts", "qts", "date", "seq")
    }
    raw_channels = _field(raw, "channels", "update_state.")
    if not isinstance(raw_channels, dict):
        _fail("update_state.channels", "must be an object")
    channels: dict[int, int] = {}
    for channel, pts in raw_channels.items():
        if not _CHANNEL_KEY.fullmatch(channel) or int(channel) > _INT64[1]:
            _fail("update_state.channels", "a key is not a channel id (a decimal integer >= 1)")
        channels[int(channel)] = _int(pts, f"update_state.channels[{channel}]", _UINT31)
    return UpdateState(channels=channels, **values)


def _entity_rows(raw: Any) -> tuple[Entity, ...]:
    if not isinstance(raw, list):
        _fail("entities", "must be a list")
    entities: list[Entity] = []
    for index, row in enumerate(raw):
        where = f"entities[{index}]"
        if not isinstance(row, list) or len(row) != 5:
            _fail(where, "must be a list of 5 items: id, access_hash, username, phone, name")
        entities.append(
            Entity(
                id=_int(row[0], f"{where}.id", _INT64),
                access_hash=_int(row[1], f"{where}.access_hash", _INT64),
                username=_opt_str(row[2], f"{where}.username"),
                phone=_opt_str(row[3], f"{where}.phone"),
                name=_opt_str(row[4], f"{where}.name"),
            )
        )
    return tuple(entities)


def _fail(field: str, why: str) -> NoReturn:
    raise _Invalid(field, why)


def _field(obj: dict[str, Any], name: str, prefix: str = "") -> Any:
    try:
        return obj[name]
    except KeyError:
        _fail(prefix + name, "is missing")


def _int(value: Any, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not _is_int(value) or not low <= value <= high:
        _fail(field, f"must be an integer in {low}..{high}")
    result: int = value
    return result


def _opt_str(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        _fail(field, "must be a string or null")
    result: str | None = value
    return result


def _pos(exc: Exception) -> int:
    return int(getattr(exc, "pos", getattr(exc, "start", 0)))
