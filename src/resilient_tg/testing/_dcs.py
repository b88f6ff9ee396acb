"""Several DCs in one test server: which DCs exist, where clients are told to find
them, and the exported authorizations that carry a login from one DC to another.

Telegram homes every account on one DC. A client asking another DC about it gets
303 PHONE_MIGRATE_X / USER_MIGRATE_X / NETWORK_MIGRATE_X (see `._api_dcs`), looks the
DC's address up in help.getConfig and dials it; `advertise` changes that address so a
test can put a `FaultProxy` in front of one DC.
"""

from __future__ import annotations

import os
import time

import attrs
from telethon.sessions import MemorySession

from ._links import DcListener

# An exported authorization is good for one import within this many seconds.
EXPORT_TTL = 60.0
MAX_EXPORTS = 10_000


@attrs.define(eq=False)
class ExportedAuth:
    """auth.exportAuthorization's answer as the server remembers it until imported."""

    user_id: int
    dc_id: int
    expires: float  # time.monotonic()


def dc_range(dc_id: int, dcs: int) -> tuple[int, ...]:
    """The DC ids a server serves: just ``dc_id``, or 1..dcs (which must hold dc_id)."""
    if not 1 <= dcs <= 1000:
        raise ValueError(f"dcs must be in 1..1000, got {dcs}")
    if dcs == 1:
        return (dc_id,)
    if not 1 <= dc_id <= dcs:
        raise ValueError(f"dc_id {dc_id} is not among the served DCs 1..{dcs}")
    return tuple(range(1, dcs + 1))


class DcControl:
    """The multi-DC part of `MTProtoTestServer`'s control API."""

    _dc_id: int
    _dcs: dict[int, DcListener]
    _network_dc: int | None
    _exports: dict[bytes, ExportedAuth]

    @property
    def dc_ids(self) -> tuple[int, ...]:
        """The DCs this server serves, each on its own port."""
        return tuple(self._dcs)

    def dc_port(self, dc_id: int) -> int:
        """The port DC ``dc_id`` listens on (kept across `restart`)."""
        return self._listener(dc_id).port

    def dc_address(self, dc_id: int) -> tuple[str, int]:
        """(host, port) DC ``dc_id`` actually listens on."""
        listener = self._listener(dc_id)
        return (listener.host, listener.port)

    def advertise(self, dc_id: int, host: str, port: int) -> None:
        """Tell clients DC ``dc_id`` is at (host, port): help.getConfig's dc_options show
        it, so a client switching DC after a *_MIGRATE answer dials it. Point it at a
        `FaultProxy` in front of `dc_address`, or back at `dc_address` to undo."""
        if not host or not 1 <= port <= 65535:
            raise ValueError(f"advertise needs a host and a port in 1..65535, got {host!r}:{port}")
        self._listener(dc_id).advertised = (host, port)

    def advertised_address(self, dc_id: int) -> tuple[str, int]:
        """The (host, port) help.getConfig shows for DC ``dc_id``."""
        return self._listener(dc_id).public_address

    def telethon_session_for(self, dc_id: int) -> MemorySession:
        """A fresh Telethon MemorySession pointed at DC ``dc_id``'s listener."""
        session = MemorySession()
        session.set_dc(dc_id, *self.dc_address(dc_id))
        return session

    @property
    def network_dc(self) -> int | None:
        """The DC set by `set_network_dc`, if any."""
        return self._network_dc

    def set_network_dc(self, dc_id: int | None) -> None:
        """Make auth.sendCode on any other DC answer 303 NETWORK_MIGRATE_<dc_id>, as
        Telegram does when the client's network belongs to another DC; the phone's
        home DC still serves its own account. None turns it off."""
        if dc_id is not None:
            self._listener(dc_id)
        self._network_dc = dc_id

    def _listener(self, dc_id: int) -> DcListener:
        listener = self._dcs.get(dc_id)
        if listener is None:
            raise ValueError(f"this server serves DCs {self.dc_ids}, not {dc_id}")
        return listener

    def _home_dc(self, dc_id: int | None) -> int:
        """A control call's DC: the server's own unless given (and served)."""
        if dc_id is None:
            return self._dc_id
        self._listener(dc_id)
        return dc_id

    def _export_auth(self, user_id: int, dc_id: int) -> bytes:
        """Remember a fresh single-use authorization of ``user_id`` for DC ``dc_id``."""
        now = time.monotonic()
        for token, export in list(self._exports.items()):
            if export.expires <= now:
                del self._exports[token]
        while len(self._exports) >= MAX_EXPORTS:
            del self._exports[next(iter(self._exports))]
        token = os.urandom(128)
        self._exports[token] = ExportedAuth(user_id=user_id, dc_id=dc_id, expires=now + EXPORT_TTL)
        return token

    def _take_export(self, user_id: int, token: bytes, dc_id: int) -> bool:
        """Use up an exported authorization; False unless it is live, for this user and DC."""
        export = self._exports.get(token)
        if export is None or export.user_id != user_id or export.dc_id != dc_id:
            return False
        del self._exports[token]
        return export.expires > time.monotonic()
