"""SessionStore: the small async contract every session store implements.

Subclass it to keep sessions anywhere: write ``load``, ``save`` and ``delete``; the
lease calls have a process-local default, so a store that cannot lease across
processes still keeps two clients in one process apart (and says so).
"""

from __future__ import annotations

import abc
import os
import secrets
import socket
import threading
import time
from types import TracebackType
from typing import ClassVar

import attrs

from .._errors import LeaseLostError, SessionInUseError
from ._data import SessionData

__all__ = ["Lease", "SessionStore", "default_holder"]


def default_holder() -> str:
    """``host:pid:random`` — unique per process start, readable in health output."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@attrs.frozen
class Lease:
    """Who may use a session until when. ``token`` grows with every new holder (fencing)."""

    holder: str
    expires_at: float  # wall-clock seconds (time.time())
    token: int = 0

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


def _check_lease_args(holder: str, ttl: float) -> None:
    if not isinstance(holder, str) or not holder:
        raise ValueError("lease holder must be a non-empty string")
    if not ttl > 0:
        raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")


class SessionStore(abc.ABC):
    """Where one session lives. Constructors do no I/O; connections open lazily.

    ``load`` returns None for an empty store and raises SessionCorruptError for one
    that cannot be read (never None: a corrupt session must not turn into a new
    login). ``save`` must be atomic: after a crash, ``load`` returns the old or the
    new data, never a mix.
    """

    #: Whether `acquire_lease` excludes other processes (and machines).
    cross_process_lease: ClassVar[bool] = False

    @abc.abstractmethod
    async def load(self) -> SessionData | None:
        """The stored session, or None if there is none."""

    @abc.abstractmethod
    async def save(self, data: SessionData) -> None:
        """Replace the stored session atomically."""

    @abc.abstractmethod
    async def delete(self) -> None:
        """Remove the stored session (a no-op if there is none)."""

    def describe(self) -> str:
        """Where this store keeps the session, for errors and health; never a secret."""
        return type(self).__name__

    # Leases ---------------------------------------------------------------------
    # The default is process-local: fine for memory and env stores, documented as such.

    def lease_key(self) -> str:
        """Identifies the session for the process-local lease table."""
        return f"{type(self).__name__}:{id(self)}"

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        """Take the lease, or raise SessionInUseError at once if another live holder has it."""
        _check_lease_args(holder, ttl)
        return _LOCAL.acquire(self.lease_key(), holder, ttl, self.describe())

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        """Extend our lease; LeaseLostError if it expired and another holder took it."""
        _check_lease_args(holder, ttl)
        return _LOCAL.renew(self.lease_key(), holder, ttl, self.describe())

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if we hold it (a no-op otherwise)."""
        _LOCAL.release(self.lease_key(), holder)

    async def current_lease(self) -> Lease | None:
        """The lease as the store sees it now (None if free or expired)."""
        return _LOCAL.current(self.lease_key())

    # Lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:  # noqa: B027 - a no-op default is the point
        """Release connections and files the store opened (it can be used again later)."""

    async def __aenter__(self) -> SessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class _LocalLeases:
    """The process-local lease table behind the default lease methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._tokens: dict[str, int] = {}

    def acquire(self, key: str, holder: str, ttl: float, where: str) -> Lease:
        now = time.time()
        with self._lock:
            current = self._leases.get(key)
            if current is not None and current.holder != holder and current.expires_at > now:
                raise SessionInUseError(
                    f"{where}: the session is leased to {current.holder} "
                    f"for another {current.expires_at - now:.1f}s",
                    store=where,
                    holder=current.holder,
                    expires_at=current.expires_at,
                )
            token = self._tokens.get(key, 0)
            if current is None or current.holder != holder or current.expires_at <= now:
                token += 1
                self._tokens[key] = token
            lease = Lease(holder=holder, expires_at=now + ttl, token=token)
            self._leases[key] = lease
            return lease

    def renew(self, key: str, holder: str, ttl: float, where: str) -> Lease:
        now = time.time()
        with self._lock:
            current = self._leases.get(key)
            if current is None or current.holder != holder:
                raise LeaseLostError(
                    f"{where}: our lease is gone"
                    + (f" (now held by {current.holder})" if current else ""),
                    store=where,
                    holder=holder,
                )
            lease = Lease(holder=holder, expires_at=now + ttl, token=current.token)
            self._leases[key] = lease
            return lease

    def release(self, key: str, holder: str) -> None:
        with self._lock:
            current = self._leases.get(key)
            if current is not None and current.holder == holder:
                del self._leases[key]

    def current(self, key: str) -> Lease | None:
        with self._lock:
            lease = self._leases.get(key)
            return lease if lease is not None and lease.expires_at > time.time() else None


_LOCAL = _LocalLeases()
