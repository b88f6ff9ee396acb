"""SessionData's format: version 2 records whether the key was ever logged in, version 1
documents still load, decoding is strict (wrong types, out-of-range numbers, duplicate
or unknown keys are errors naming the field, never coerced), and no repr shows a phone
number or an access hash. Also what the session bridge keeps of Telethon's writes."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from telethon.crypto import AuthKey
from telethon.tl import types

from resilient_tg import SessionCorruptError
from resilient_tg.stores import (
    Entity,
    MemoryStore,
    SessionData,
    StoreSession,
    UpdateState,
    decode,
    encode,
)

KEY = bytes(range(256))
OTHER_KEY = bytes(reversed(range(256)))
PHONE = "15550001234"
ACCESS_HASH = -7_240_118_993_021_337_411
SOURCE = "file:///tmp/s.json"


def sample(*, ever_authorized: bool = True) -> SessionData:
    return SessionData(
        dc_id=2,
        server_address="127.0.0.1",
        port=4430,
        auth_key=KEY,
        takeout_id=77,
        update_state=UpdateState(pts=5, qts=2, date=1_700_000_000, seq=4, channels={10: 3}),
        entities=(Entity(id=5, access_hash=ACCESS_HASH, username="bob", phone=PHONE, name="Bob"),),
        ever_authorized=ever_authorized,
    )


def document(data: SessionData | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode(data or sample()))
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


# Format version 2 and version 1 ---------------------------------------------------------


@pytest.mark.parametrize("ever_authorized", [True, False])
def test_ever_authorized_round_trips(ever_authorized: bool) -> None:
    data = sample(ever_authorized=ever_authorized)
    assert data.version == 2
    assert document(data)["ever_authorized"] is ever_authorized
    assert decode(encode(data), source=SOURCE) == data


def test_a_version_1_document_with_a_key_counts_as_authorized() -> None:
    """Version 1 did not record it; a key it stored may have been logged in, and a 401
    for it must be a revocation (AUTH_LOST), never a reason to discard it."""
    doc = document()
    doc["version"] = 1
    del doc["ever_authorized"]
    data = decode(raw(doc), source=SOURCE)
    assert data.ever_authorized is True
    assert data.version == 2
    assert data.auth_key == KEY
    assert data.update_state == sample().update_state
    assert decode(encode(data), source=SOURCE) == data  # written back as version 2


def test_a_version_1_document_without_a_key_is_not_authorized() -> None:
    doc = document(SessionData(dc_id=2, server_address="127.0.0.1", port=443))
    doc["version"] = 1
    del doc["ever_authorized"]
    assert decode(raw(doc), source=SOURCE).ever_authorized is False


def test_ever_authorized_needs_a_key() -> None:
    with pytest.raises(ValueError, match="ever_authorized"):
        SessionData(dc_id=2, server_address="h", port=1, ever_authorized=True)


# Strict decoding --------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(key: str) -> Any:
    return lambda doc: doc.pop(key)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set("server_address", 5), "server_address"),
        (_set("server_address", ""), "server_address"),
        (_set("dc_id", 10**30), "dc_id"),
        (_set("dc_id", 0), "dc_id"),
        (_set("dc_id", "2"), "dc_id"),
        (_set("dc_id", 2.0), "dc_id"),
        (_set("dc_id", True), "dc_id"),
        (_set("port", "443"), "port"),
        (_set("port", 70000), "port"),
        (_set("takeout_id", 2**64), "takeout_id"),
        (_set("auth_key", 5), "auth_key"),
        (_set("auth_key", base64.b64encode(b"short").decode()), "auth_key"),
        (_set("auth_key", "not base64!"), "auth_key"),
        (_set("ever_authorized", 1), "ever_authorized"),
        (_set("ever_authorized", "yes"), "ever_authorized"),
        (_drop("ever_authorized"), "ever_authorized"),
        (_drop("port"), "port"),
        (_set("update_state", [1, 2, 3, 4]), "update_state"),
        (_set("update_state.pts", "5"), "update_state.pts"),
        (_set("update_state.seq", -1), "update_state.seq"),
        (_set("update_state.date", 2**40), "update_state.date"),
        (_set("update_state.channels", [[10, 3]]), "update_state.channels"),
        (_set("update_state.channels", {" 10": 3}), "update_state.channels"),
        (_set("update_state.channels", {"0": 3}), "update_state.channels"),
        (_set("update_state.channels", {"10": 3.0}), "update_state.channels[10]"),
        (_set("entities", {}), "entities"),
        (_set("entities.0", [5, 1, None, None]), "entities[0]"),
        (_set("entities.0", [5, 1, None, None, None, "extra"]), "entities[0]"),
        (_set("entities.0.1", 2**63), "entities[0].access_hash"),
        (_set("entities.0.0", "5"), "entities[0].id"),
        (_set("entities.0.3", 15550001234), "entities[0].phone"),
        (_set("surprise", 1), "surprise"),
    ],
)
def test_a_wrong_field_is_an_error_naming_it(change: Any, field: str) -> None:
    doc = document()
    change(doc)
    with pytest.raises(SessionCorruptError) as info:
        decode(raw(doc), source=SOURCE)
    message = str(info.value)
    assert field in message
    assert SOURCE in message
    assert info.value.store == SOURCE
    for secret in (PHONE, str(ACCESS_HASH), base64.b64encode(KEY).decode()):
        assert secret not in message


def test_ever_authorized_without_a_key_is_corrupt() -> None:
    doc = document()
    doc["auth_key"] = None
    with pytest.raises(SessionCorruptError, match="ever_authorized"):
        decode(raw(doc), source=SOURCE)


@pytest.mark.parametrize("key", ["auth_key", "dc_id", "update_state"])
def test_a_duplicate_key_is_an_error_naming_it(key: str) -> None:
    """json.loads would keep the last one: a trailing "auth_key": null would load as a
    session without a key (and a new login), so a repeated key is corruption."""
    text = encode(sample()).decode()
    assert text.endswith("}")
    duplicated = text[:-1] + f',"{key}":null}}'
    with pytest.raises(SessionCorruptError, match=f"'{key}' twice"):
        decode(duplicated.encode(), source=SOURCE)


def test_a_nested_duplicate_key_is_an_error() -> None:
    text = encode(sample()).decode().replace('"pts":5,', '"pts":5,"pts":0,')
    with pytest.raises(SessionCorruptError, match="'pts' twice"):
        decode(text.encode(), source=SOURCE)


@pytest.mark.parametrize("version", [True, "2", 2.0, 3, 0])
def test_a_version_that_is_not_a_supported_integer_is_refused(version: Any) -> None:
    doc = document()
    doc["version"] = version
    with pytest.raises(SessionCorruptError, match="version"):
        decode(raw(doc), source=SOURCE)


def test_construction_checks_types_and_ranges_too() -> None:
    with pytest.raises(ValueError, match="dc_id"):
        SessionData(dc_id=10**30, server_address="h", port=1)
    with pytest.raises(ValueError, match="port"):
        SessionData(dc_id=2, server_address="h", port=True)
    with pytest.raises(ValueError, match=r"Entity\.phone"):
        Entity(id=1, access_hash=2, phone=15550001234)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Entity\.access_hash") as info:
        Entity(id=1, access_hash=2**64)
    assert str(2**64) not in str(info.value)


# Reprs -------------------------------------------------------------------------------------


def test_no_repr_shows_a_phone_number_or_an_access_hash() -> None:
    data = sample()
    (entity,) = data.entities
    session = StoreSession(MemoryStore(data))
    session.apply(data)
    shown = [repr(data), str(data), repr(entity), str(entity), repr(session), str(session)]
    shown.append(repr(MemoryStore(data)))
    for text in shown:
        assert PHONE not in text
        assert str(ACCESS_HASH) not in text
        assert KEY.hex() not in text
    assert "<1 cached>" in repr(data)
    assert "bob" in repr(entity)  # what identifies it is still shown


# The bridge: what it keeps of Telethon's writes -------------------------------------------


def _state(pts: int, date: int, seq: int = 0) -> types.updates.State:
    when = dt.datetime.fromtimestamp(date, tz=dt.timezone.utc)
    return types.updates.State(pts=pts, qts=0, date=when, seq=seq, unread_count=0)


@pytest.mark.parametrize("date", [0, 1])
def test_telethons_empty_state_never_replaces_a_stored_one(date: int) -> None:
    """An empty message box (a client that never fetched a state) writes pts 0, date 0
    or 1: that says nothing, and the stored state stays."""
    session = StoreSession(MemoryStore())
    session.apply(sample())
    session.set_update_state(0, _state(0, date))
    snapshot = session.snapshot()
    assert snapshot is not None
    assert snapshot.update_state == sample().update_state
    assert not session.dirty
    fresh = StoreSession(MemoryStore())
    fresh.apply(SessionData(dc_id=2, server_address="h", port=1, auth_key=KEY))
    fresh.set_update_state(0, _state(0, date))
    assert fresh.snapshot().update_state is None  # type: ignore[union-attr]


def test_a_held_update_state_stays_as_loaded_until_released() -> None:
    session = StoreSession(MemoryStore())
    session.apply(sample())
    session.hold_update_state()
    session.set_update_state(0, _state(3, 1_600_000_000, seq=9))
    session.set_update_state(10, _state(1, 0))
    assert session.snapshot().update_state == sample().update_state  # type: ignore[union-attr]
    assert not session.dirty
    session.release_update_state()
    session.set_update_state(0, _state(9, 1_700_000_100, seq=5))
    state = session.snapshot().update_state  # type: ignore[union-attr]
    assert state is not None
    assert (state.pts, state.date, state.seq) == (9, 1_700_000_100, 5)
    assert session.dirty


def test_ever_authorized_follows_the_key() -> None:
    """Marked once the server accepts the key as logged in; a new key never was."""
    session = StoreSession(MemoryStore())
    session.apply(sample(ever_authorized=False))
    assert session.ever_authorized is False
    session.mark_authorized()
    assert session.ever_authorized is True
    assert session.dirty
    assert session.snapshot().ever_authorized is True  # type: ignore[union-attr]
    session.auth_key = AuthKey(OTHER_KEY)
    assert session.ever_authorized is False
    session.auth_key = None
    assert session.snapshot().ever_authorized is False  # type: ignore[union-attr]
    reloaded = StoreSession(MemoryStore())
    reloaded.apply(sample(ever_authorized=True))
    assert reloaded.ever_authorized is True
    assert not reloaded.dirty


def _state(pts: int, date: int, qts: int = 0, seq: int = 0) -> Any:
    when = dt.datetime.fromtimestamp(date, tz=dt.timezone.utc)
    return types.updates.State(pts=pts, qts=qts, date=when, seq=seq, unread_count=0)


def test_a_channel_state_saved_again_with_a_new_time_is_no_change() -> None:
    """Telethon stamps every save of a channel's state with the current time: only the
    pts identifies it, or an idle client with channels would write every flush."""
    session = StoreSession(MemoryStore())
    session.set_update_state(777, _state(40, 1_700_000_000))
    changes = session._changes
    session.set_update_state(777, _state(40, 1_700_000_999))
    assert session._changes == changes
    session.set_update_state(777, _state(41, 1_700_000_999))
    assert session._changes == changes + 1


def test_update_state_matches_says_when_telethons_save_would_change_nothing() -> None:
    session = StoreSession(MemoryStore())
    date = dt.datetime.fromtimestamp(1_700_000_100, tz=dt.timezone.utc)
    account = {"pts": 9, "qts": 2, "date": date, "seq": 5}
    session.process_entities(
        types.contacts.ResolvedPeer(None, [types.InputPeerUser(0, 4242)], [])  # type: ignore[arg-type]
    )
    assert not session.update_state_matches(4242, account, {})  # state never saved
    session.set_update_state(0, _state(9, 1_700_000_100, qts=2, seq=5))
    session.set_update_state(777, _state(40, 1_700_000_000))
    assert session.update_state_matches(4242, account, {777: 40})
    assert not session.update_state_matches(4243, account, {777: 40})  # another self id
    assert not session.update_state_matches(4242, {**account, "pts": 10}, {777: 40})
    assert not session.update_state_matches(4242, account, {777: 41})
    assert not session.update_state_matches(4242, account, {778: 1})  # a new channel
    # Telethon's empty box is never written, so it matches whatever is stored.
    empty = {"pts": 0, "qts": 0, "seq": 0, "date": dt.datetime.fromtimestamp(1, dt.timezone.utc)}
    assert session.update_state_matches(4242, empty, {})
    # While held, the update state is not taken: only the own-id row counts.
    session.hold_update_state()
    assert session.update_state_matches(4242, {**account, "pts": 99}, {777: 99})
    assert not session.update_state_matches(1, account, {})
