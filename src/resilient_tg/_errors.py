"""The exceptions raised by resilient_tg, under one root.

    ResilientTgError
    ├── SessionCorruptError   a stored session cannot be read; nothing was overwritten
    ├── SessionInUseError     another live process holds the session's lease
    ├── LeaseLostError        our lease was taken over or could not be renewed
    ├── AuthLostError         the server no longer accepts the auth key (revoked, duplicated, -404)
    ├── AppRejectedError      the server refuses the app's api_id/api_hash (API_ID_INVALID...)
    ├── FleetError            a fleet cannot run as configured (SQLite seen from several hosts)
    ├── UnknownAccountError   no account of that name in the fleet's database (also a LookupError)
    ├── AccountExistsError    the fleet already has an account of that name (also a ValueError)
    ├── NotConnectedError     the request was never sent: no link in time, or the queue was full
    ├── StaleCacheError       MessageCache: fresh data was asked for while the link is down
    ├── CacheCorruptError     MessageCache: a cached entry cannot be read (wrong key, altered)
    ├── ResultLostError       the request took effect on the server but its answer was lost
    └── ResultUnknownError    sent, but not answered in time: it may or may not have taken effect

Each error keeps what caused it as attributes (``store``, ``holder``, ``reason``...),
never a secret.
"""

from __future__ import annotations

__all__ = [
    "AccountExistsError",
    "AppRejectedError",
    "AuthLostError",
    "CacheCorruptError",
    "FleetError",
    "LeaseLostError",
    "NotConnectedError",
    "ResilientTgError",
    "ResultLostError",
    "ResultUnknownError",
    "SessionCorruptError",
    "SessionInUseError",
    "StaleCacheError",
    "UnknownAccountError",
]


class ResilientTgError(Exception):
    """Root of every error this library raises on purpose."""


class SessionCorruptError(ResilientTgError):
    """A stored session exists but cannot be read: it is reported, never replaced by a new login."""

    def __init__(self, message: str, *, store: str = "") -> None:
        super().__init__(message)
        self.store = store


class SessionInUseError(ResilientTgError):
    """Another live holder has the session's lease: two users of one auth key get it revoked."""

    def __init__(
        self, message: str, *, store: str = "", holder: str = "", expires_at: float | None = None
    ) -> None:
        super().__init__(message)
        self.store = store
        self.holder = holder
        self.expires_at = expires_at


class LeaseLostError(ResilientTgError):
    """Our lease on the session expired or was taken by another holder."""

    def __init__(self, message: str, *, store: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.store = store
        self.holder = holder


class AuthLostError(ResilientTgError):
    """The server no longer accepts the auth key; retrying cannot help and may hurt."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class AppRejectedError(ResilientTgError):
    """The server refuses the app itself (API_ID_INVALID, API_ID_PUBLISHED_FLOOD and kin):
    the auth key is fine, the configuration is not; retrying cannot help.

    ``reason`` is the server's error name, e.g. ``"API_ID_INVALID"``."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class FleetError(ResilientTgError):
    """A fleet cannot run as configured (e.g. SQLite seen from several hosts)."""


class UnknownAccountError(ResilientTgError, LookupError):
    """No account (and no session) of that name in the fleet's database."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class AccountExistsError(ResilientTgError, ValueError):
    """The fleet already has an account (or a session) of that name; ``replace=True``
    replaces it."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class NotConnectedError(ResilientTgError, ConnectionError):
    """The request was never written to any link and never will be: the link did not come
    back within its timeout, the client is stopped, or too many requests already wait.

    It is also a ``ConnectionError`` so that code (Telethon's update loop included)
    that already handles network errors handles it too."""


class ResultLostError(ResilientTgError):
    """The request took effect on the server (it answered RANDOM_ID_DUPLICATE to our resend),
    but the original answer was lost with the link."""


class ResultUnknownError(ResilientTgError, TimeoutError):
    """The request had been sent (or was about to be), and no answer came within
    ``request_timeout``: it may or may not have taken effect on the server.

    It was withdrawn and is never resent. ``request`` is the request object, so a caller
    can retry it as it was; a request carrying a ``random_id`` (sending messages) is then
    refused by the server as RANDOM_ID_DUPLICATE if the first one took effect.
    """

    def __init__(self, message: str, *, request: object = None) -> None:
        super().__init__(message)
        self.request = request


class StaleCacheError(ResilientTgError):
    """A `MessageCache` read asked for ``fresh=True`` data while the client is not
    CONNECTED: the cache cannot prove it current, and Telegram cannot be asked.
    ``as_of`` is when the cache was last known current (0.0: never)."""

    def __init__(self, message: str, *, state: str = "", as_of: float = 0.0) -> None:
        super().__init__(message)
        self.state = state
        self.as_of = as_of


class CacheCorruptError(ResilientTgError):
    """A cached entry cannot be read: sealed with another key, altered, or not a message.
    ``backend`` names where it lives (no secrets)."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend
