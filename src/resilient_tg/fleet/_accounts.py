"""An account of a fleet: its status (only ``active`` ones are claimed) and its settings.

Statuses, and who sets them:

- ``pending``: a login is under way (``resilient-tg fleet add``); not claimed yet;
- ``active``: claimed and run by some worker;
- ``disabled``: parked by an operator;
- ``auth_lost``: the server stopped accepting the auth key (set by the worker that saw
  it); the session is parked with the reason instead of bouncing between workers;
- ``rejected``: the server refused the account's api_id/api_hash (set by a worker).

Settings are optional per account: an ``api_id``/``api_hash`` pair (the fleet's is used
otherwise) and a proxy URL. They are stored as JSON, sealed with the fleet's encryption
key when it has one (the api_hash and a proxy password are secrets).
"""

from __future__ import annotations

import enum
import json
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from .._errors import SessionCorruptError
from ..stores._encryption import Encryptor, is_sealed

__all__ = [
    "AccountSettings",
    "AccountStatus",
    "open_settings",
    "proxy_for_telethon",
    "seal_settings",
]

_PROXY_SCHEMES = ("socks5", "socks4", "http")


class AccountStatus(str, enum.Enum):
    """Where an account of a fleet stands; only ACTIVE accounts are claimed."""

    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"
    AUTH_LOST = "auth_lost"
    REJECTED = "rejected"


def _check_proxy(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None:
        proxy_for_telethon(value)


@attrs.frozen(repr=False)
class AccountSettings:
    """Per-account settings; any left None falls back to the fleet's."""

    api_id: int | None = None
    api_hash: str | None = None
    proxy: str | None = attrs.field(default=None, validator=_check_proxy)

    def __attrs_post_init__(self) -> None:
        if (self.api_id is None) != (self.api_hash is None):
            raise ValueError("an account's api_id and api_hash are given together or not at all")

    def __repr__(self) -> str:
        # Never the api_hash, never a proxy's password.
        parts = []
        if self.api_id is not None:
            parts.append(f"api_id={self.api_id}, api_hash=<hidden>")
        if self.proxy is not None:
            split = urlsplit(self.proxy)
            parts.append(f"proxy='{split.scheme}://{split.hostname}:{split.port}'")
        return f"AccountSettings({', '.join(parts)})"

    @property
    def empty(self) -> bool:
        return self.api_id is None and self.proxy is None


def seal_settings(settings: AccountSettings, encryptor: Encryptor | None) -> bytes | None:
    """The settings as stored: None when empty, JSON sealed when there is a key."""
    if settings.empty:
        return None
    blob = json.dumps(
        {"api_id": settings.api_id, "api_hash": settings.api_hash, "proxy": settings.proxy}
    ).encode()
    return blob if encryptor is None else encryptor.seal(blob)


def open_settings(
    blob: bytes | None, encryptor: Encryptor | None, *, source: str
) -> AccountSettings:
    """The stored settings (SessionCorruptError naming ``source`` when unreadable)."""
    if blob is None:
        return AccountSettings()
    blob = bytes(blob)
    if encryptor is not None:
        blob = encryptor.open(blob, source=source)
    elif is_sealed(blob):
        raise SessionCorruptError(
            f"{source}: the account's settings are encrypted; give the fleet's encryption key",
            store=source,
        )
    try:
        data = json.loads(blob)
        api_id = data.get("api_id")
        return AccountSettings(
            api_id=None if api_id is None else int(api_id),
            api_hash=data.get("api_hash"),
            proxy=data.get("proxy"),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SessionCorruptError(
            f"{source}: the account's settings are not readable ({type(exc).__name__})",
            store=source,
        ) from None


def proxy_for_telethon(url: str) -> dict[str, Any]:
    """``socks5://user:pass@host:port`` (or socks4, http) as Telethon's ``proxy=`` dict."""
    split = urlsplit(url)
    if split.scheme not in _PROXY_SCHEMES or not split.hostname or split.port is None:
        raise ValueError(
            "a proxy is a URL like socks5://user:password@host:port "
            f"(socks5, socks4 or http), got scheme {split.scheme or '(none)'!r}"
        )
    proxy: dict[str, Any] = {
        "proxy_type": split.scheme,
        "addr": split.hostname,
        "port": split.port,
        "rdns": True,
    }
    if split.username is not None:
        proxy["username"] = unquote(split.username)
    if split.password is not None:
        proxy["password"] = unquote(split.password)
    return proxy
