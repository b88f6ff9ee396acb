"""EnvStringStore: a session from a Telethon StringSession in an environment variable.

Container platforms hand secrets over as environment variables; a StringSession is
how Telethon users already carry a session there. A variable cannot be written, so
what the client learns later (a new auth key, entities, update state) goes to an
optional fallback store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import os
import struct

from .._errors import SessionCorruptError
from ._base import Lease, SessionStore
from ._data import AUTH_KEY_SIZE, SessionData

__all__ = ["EnvStringStore", "parse_string_session"]

log = logging.getLogger("resilient_tg.stores")

_VERSION = "1"
_IPV4 = struct.Struct(">B4sH256s")
_IPV6 = struct.Struct(">B16sH256s")


class EnvStringStore(SessionStore):
    """Reads a Telethon ``StringSession`` from ``os.environ[var]``; writes to ``fallback``.

    - ``load()`` prefers the fallback when it holds a session (it has what the string
      cannot carry: entities and update state, and a newer key); otherwise it parses
      the variable. An unset or empty variable is an empty store; a malformed one is a
      SessionCorruptError naming the variable, never showing its value.
    - ``save()``: if the auth key or the DC differs from the variable's, an ERROR is
      logged (naming the variable, not the key) once per new value, since the
      variable is now stale. With a fallback every save is written there. Without
      one, the new data lives only in this process: entities and update state are
      dropped (a StringSession cannot hold them) and a new key is lost at exit.
    - ``delete()`` deletes the fallback's session; the variable cannot be cleared, so
      this store ignores it for the rest of the process and warns that it should be
      removed. A later ``save()`` lifts that.
    - Lease: the fallback's (cross-process if the fallback's is); without a
      fallback, the process-local default, keyed by the variable name — it keeps two
      clients in this process apart and nothing else does.
    """

    def __init__(self, var: str, fallback: SessionStore | None = None) -> None:
        if not isinstance(var, str) or not var:
            raise ValueError("EnvStringStore needs the name of an environment variable")
        if fallback is not None and not isinstance(fallback, SessionStore):
            raise TypeError(f"fallback must be a SessionStore, got {type(fallback).__name__}")
        self._var = var
        self._fallback = fallback
        self._deleted = False
        self._reported: bytes | None = None  # digest of the last stale-variable report
        self._warned_mismatch = False

    @property
    def var(self) -> str:
        return self._var

    @property
    def fallback(self) -> SessionStore | None:
        return self._fallback

    def describe(self) -> str:
        return f"env://{self._var}"

    def __repr__(self) -> str:
        if self._fallback is None:
            return f"<EnvStringStore {self.describe()}>"
        return f"<EnvStringStore {self.describe()} fallback={self._fallback!r}>"

    # Session data -------------------------------------------------------------------

    async def load(self) -> SessionData | None:
        """The fallback's session if it has one, else the variable's (None if unset)."""
        if self._fallback is not None:
            data = await self._fallback.load()
            if data is not None:
                self._warn_if_variable_differs(data)
                return data
        if self._deleted:
            return None
        return self._from_env()

    async def save(self, data: SessionData) -> None:
        """Write to the fallback; report loudly when the variable no longer matches."""
        if not isinstance(data, SessionData):
            raise TypeError(f"EnvStringStore.save() takes SessionData, got {type(data).__name__}")
        self._report_if_stale(data)
        self._deleted = False
        if self._fallback is not None:
            await self._fallback.save(data)
        else:
            log.debug(
                "%s has no fallback store: entities and update state are not persisted",
                self.describe(),
            )

    async def delete(self) -> None:
        """Delete the fallback's session and stop using the variable in this process."""
        if self._fallback is not None:
            await self._fallback.delete()
        if os.environ.get(self._var, "").strip() and not self._deleted:
            log.warning(
                "%s: the session was deleted, but the variable cannot be cleared; "
                "remove %s from the environment before the next start",
                self.describe(),
                self._var,
            )
        self._deleted = True

    def _from_env(self) -> SessionData | None:
        raw = os.environ.get(self._var)
        if raw is None or not raw.strip():
            return None
        return parse_string_session(raw, source=self.describe())

    def _env_identity(self) -> tuple[int, str, int, bytes | None] | None:
        try:
            data = self._from_env()
        except SessionCorruptError:
            return None
        if data is None:
            return None
        return (data.dc_id, data.server_address, data.port, data.auth_key)

    def _report_if_stale(self, data: SessionData) -> None:
        if data.auth_key is None:
            return  # no key yet (e.g. a DC set before the key exchange): nothing to lose
        mine = (data.dc_id, data.server_address, data.port, data.auth_key)
        if mine == self._env_identity():
            return
        digest = hashlib.sha256(repr(mine).encode()).digest()
        if digest == self._reported:
            return
        self._reported = digest
        if self._fallback is not None:
            log.error(
                "%s: the session's auth key or DC changed and the variable cannot be updated; "
                "saved to %s instead. Export a new session string into %s, or keep that store",
                self.describe(),
                self._fallback.describe(),
                self._var,
            )
        else:
            log.error(
                "%s: the session's auth key or DC changed and the variable cannot be updated; "
                "the new session exists only in this process and is lost when it ends. "
                "Export a new session string into %s, or give EnvStringStore a fallback store",
                self.describe(),
                self._var,
            )

    def _warn_if_variable_differs(self, data: SessionData) -> None:
        if self._warned_mismatch or self._deleted:
            return
        raw = os.environ.get(self._var)
        if raw is None or not raw.strip():
            return
        try:
            env = parse_string_session(raw, source=self.describe())
        except SessionCorruptError:
            self._warned_mismatch = True
            log.warning(
                "%s is not a valid session string; using the session in %s",
                self.describe(),
                self._describe_fallback(),
            )
            return
        if (env.dc_id, env.auth_key) != (data.dc_id, data.auth_key):
            self._warned_mismatch = True
            log.warning(
                "%s holds a different session than %s; using the stored one (delete it "
                "to start from the variable)",
                self.describe(),
                self._describe_fallback(),
            )

    def _describe_fallback(self) -> str:
        return self._fallback.describe() if self._fallback is not None else ""

    # Lease ----------------------------------------------------------------------------

    def lease_key(self) -> str:
        return f"env://{self._var}"

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        if self._fallback is not None:
            return await self._fallback.acquire_lease(holder, ttl)
        return await super().acquire_lease(holder, ttl)

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        if self._fallback is not None:
            return await self._fallback.renew_lease(holder, ttl)
        return await super().renew_lease(holder, ttl)

    async def release_lease(self, holder: str) -> None:
        if self._fallback is not None:
            await self._fallback.release_lease(holder)
        else:
            await super().release_lease(holder)

    async def current_lease(self) -> Lease | None:
        if self._fallback is not None:
            return await self._fallback.current_lease()
        return await super().current_lease()

    async def aclose(self) -> None:
        if self._fallback is not None:
            await self._fallback.aclose()


def parse_string_session(value: str, *, source: str) -> SessionData:
    """Parse a Telethon StringSession (``'1'`` + urlsafe base64 of dc id, ip, port, key).

    Errors name ``source`` and what is wrong, never the string: it is the account.
    """

    def bad(what: str) -> SessionCorruptError:
        return SessionCorruptError(
            f"{source}: not a valid Telethon session string ({what})", store=source
        )

    if not isinstance(value, str):
        raise bad("not text")
    text = value.strip()
    if not text.startswith(_VERSION):
        raise bad("it must start with version '1'")
    body = text[1:].rstrip("=")
    try:
        raw = base64.b64decode(
            body.encode("ascii") + b"=" * (-len(body) % 4), altchars=b"-_", validate=True
        )
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise bad("invalid base64") from None
    if len(raw) == _IPV4.size:
        dc_id, ip, port, key = _IPV4.unpack(raw)
    elif len(raw) == _IPV6.size:
        dc_id, ip, port, key = _IPV6.unpack(raw)
    else:
        raise bad(f"{len(raw)} bytes decoded, expected {_IPV4.size} or {_IPV6.size}")
    assert len(key) == AUTH_KEY_SIZE
    try:
        auth_key = key if any(key) else None
        return SessionData(
            dc_id=dc_id,
            server_address=ipaddress.ip_address(ip).compressed,
            port=port,
            auth_key=auth_key,
            # A string carries a session someone logged in: a 401 means it was revoked.
            ever_authorized=auth_key is not None,
        )
    except ValueError as exc:
        text = str(exc)
        field = text.split(" must ")[0] if " must " in text else "a field is invalid"
        raise bad(field) from None
