"""FileStore: one session in one file — the embedded default, no extra dependency.

Saves are atomic (temp file in the same directory, fsync, ``os.replace``, fsync of the
directory), so a crash at any moment leaves the old or the new session, never a mix.
Files are 0600; a directory the store creates is 0700. No file is opened through a
symbolic link at its path (see `resilient_tg._safefile`), and a directory writable by
group or others is refused unless the store is told it may be shared. All file work runs in a worker
thread: the event loop never waits for a disk. A temp file left by a writer that died
mid-save is harmless and is swept by the next save (a live writer holds a flock on its
temp file, so only abandoned ones are removed).

The lease is a lock file next to the session (``<path>.lock``) held with ``flock``:
the kernel drops it when the holding process exits, however it exits. Its content
(holder, expiry, fencing token) is what other processes see in SessionInUseError.
The lock is `._filelock`; reading a Telethon ``.session`` is `._telethon_file`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from pathlib import Path

import anyio.to_thread

from .._errors import SessionCorruptError
from .._safefile import (
    check_private_dir,
    fsync_dir,
    make_private_dirs,
    remove_stale_temp_files,
    write_atomically,
)
from . import _filelock
from ._base import Lease, SessionStore, _check_lease_args
from ._data import SessionData, decode, encode
from ._encryption import MAGIC, Encryptor, resolve_key
from ._telethon_file import SQLITE_MAGIC, read_telethon_session

__all__ = ["FileStore"]

log = logging.getLogger("resilient_tg.stores")

# Bound into every sealed file. Deliberately not the path: a backup restored to
# another directory (or a volume mounted elsewhere) must still open with its key.
_CRYPTO_CONTEXT = "resilient_tg.FileStore"


class FileStore(SessionStore):
    """A session kept in one file (the `resilient_tg.stores._data.encode` JSON
    document, or an AES-GCM sealed copy of it when an encryption key is given).

    ``encryption_key`` (32 bytes, or hex/base64 text) or ``encryption_key_env`` (the
    name of a variable holding it) turn on encryption at rest; it needs the
    ``crypto`` extra. The constructor does no I/O.

    Lease semantics (``cross_process_lease = True``): the lease is an exclusive
    ``flock`` on ``<path>.lock``. Another process can take it only once the holding
    process has released it or exited (a ``kill -9`` included) — then at once, without
    waiting for the TTL, since a dead process cannot use the key. A live holder that
    stops renewing keeps the lease past its TTL: FileStore never takes a session from
    a live process, because two live users of one auth key get it revoked. Other
    processes see the expired lease in SessionInUseError (``expires_at`` in the past)
    and keep waiting; end the stuck process to free it. Inside one process, where the
    holders share the lock, the TTL rules as for the default lease: an expired
    holder's lease may be taken over, and its next renew raises LeaseLostError.
    Locks need a local filesystem (flock on network filesystems is unreliable; use
    SQLStore there). The lock file is left in place on release and on delete(). A child
    made with ``fork()`` shares the lock until it exits or execs; ``aclose()`` releases
    the leases taken through this object.

    Writes are fenced: once this object has taken a lease, ``save()`` and ``delete()``
    raise LeaseLostError if that lease was taken over (in this process) or its lock
    file removed, so a writer that lost the session cannot overwrite the new holder's.
    An object that took no lease (a plain StoreSession user) is not fenced.

    File safety: the session, lock and temp files are opened with ``O_NOFOLLOW``; a
    symbolic link planted at one of those paths is refused with an error naming it,
    never followed (its target is never truncated, written or chmod-ed). Links in the
    directory part of the path are followed. The session's directory must not be
    writable by group or others (anyone who can write it can swap the session's files):
    such a directory is refused with PermissionError at load, save and lease time.
    ``allow_shared_dir=True`` turns that check off, for a directory shared on purpose
    (e.g. a group-writable volume whose other writers you trust).
    """

    cross_process_lease = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encryption_key: bytes | str | None = None,
        encryption_key_env: str | None = None,
        allow_shared_dir: bool = False,
    ) -> None:
        self._path = Path(os.path.abspath(os.fspath(path)))
        self._allow_shared_dir = allow_shared_dir
        if not self._path.name:
            raise ValueError("FileStore needs a file path, not a directory")
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        key = resolve_key(encryption_key, encryption_key_env)
        # Only the Encryptor keeps the key; nothing on this object can show it.
        self._encryptor = Encryptor(key, context=_CRYPTO_CONTEXT) if key is not None else None
        self._my_holders: set[str] = set()
        # The holder whose lease fences this object's writes (the last one it acquired).
        self._fence: str | None = None

    @property
    def path(self) -> Path:
        """The session file (absolute)."""
        return self._path

    @property
    def lock_path(self) -> Path:
        """The lock file that carries the lease."""
        return self._lock_path

    @property
    def encrypted(self) -> bool:
        return self._encryptor is not None

    def describe(self) -> str:
        return self._path.as_uri()

    def __repr__(self) -> str:
        extra = " encrypted" if self._encryptor is not None else ""
        return f"<FileStore {self.describe()}{extra}>"

    # Session data -------------------------------------------------------------------

    async def load(self) -> SessionData | None:
        """The stored session; None if the file does not exist; SessionCorruptError (naming
        the file and what is wrong) for anything that exists but cannot be read."""
        return await anyio.to_thread.run_sync(self._read_and_parse)

    async def save(self, data: SessionData) -> None:
        """Replace the file atomically (temp file, fsync, rename, fsync directory)."""
        if not isinstance(data, SessionData):
            raise TypeError(f"FileStore.save() takes SessionData, got {type(data).__name__}")
        size = await anyio.to_thread.run_sync(self._encode_and_write, data)
        log.debug("saved the session to %s (%d bytes)", self.describe(), size)

    async def delete(self) -> None:
        """Remove the session file (no-op if missing); the lock file stays."""
        await anyio.to_thread.run_sync(self._unlink)

    # The blocking halves, run in a worker thread (encoding a big entity cache and
    # sealing it are CPU work the event loop should not wait for either).

    def _read_and_parse(self) -> SessionData | None:
        raw = self._read()
        return None if raw is None else self._parse(raw)

    def _encode_and_write(self, data: SessionData) -> int:
        payload = encode(data)
        if self._encryptor is not None:
            payload = self._encryptor.seal(payload)
        with self._fenced():
            self._write(payload)
        return len(payload)

    def _fenced(self) -> contextlib.AbstractContextManager[None]:
        """Writes of a store object that took a lease happen only while it holds it."""
        return _filelock.fenced(self._lock_path, self.describe(), self._fence)

    def _check_dir(self) -> None:
        """Refuse a session directory others can write (unless allowed)."""
        if not self._allow_shared_dir:
            check_private_dir(
                self._path.parent,
                what=f"{self.describe()}: the session's directory {self._path.parent}",
                opt_out=(
                    "if it is shared on purpose, pass allow_shared_dir=True to FileStore "
                    "(?allow_shared_dir=1 in a file:// store URL)"
                ),
            )

    def _read(self) -> bytes | None:
        self._check_dir()
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._corrupt(
                    "is a symbolic link; FileStore does not follow links at the session "
                    "path (point it at the real file)"
                ) from None
            raise self._corrupt(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise self._corrupt("is a directory, not a session file")
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._corrupt("is not a regular file")
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read()
        except OSError as exc:
            raise self._corrupt(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        finally:
            os.close(fd)

    def _parse(self, raw: bytes) -> SessionData:
        source = self.describe()
        if not raw:
            raise self._corrupt("is empty (0 bytes): truncated, or not written by resilient_tg")
        if raw.startswith(SQLITE_MAGIC):
            raise self._corrupt(
                "is a SQLite database, not a resilient_tg session file "
                "(a Telethon .session? import it with FileStore.import_telethon())"
            )
        if self._encryptor is not None:
            # Encryptor.open says "not encrypted" or "wrong key, or altered" itself.
            raw = self._encryptor.open(raw, source=source)
        elif raw.startswith(MAGIC):
            raise self._corrupt(
                "is encrypted; give FileStore the key (encryption_key or encryption_key_env)"
            )
        try:
            return decode(raw, source=source)
        except RecursionError:
            raise self._corrupt("is not a session document (nested too deeply)") from None

    def _write(self, payload: bytes) -> None:
        directory = self._path.parent
        make_private_dirs(directory)
        self._check_dir()
        remove_stale_temp_files(directory, self._path.name)
        write_atomically(
            self._path, payload, mode=0o600, what=f"{self.describe()}: the session file"
        )

    def _unlink(self) -> None:
        try:
            with self._fenced():
                os.unlink(self._path)
        except FileNotFoundError:
            return
        fsync_dir(self._path.parent)
        log.debug("deleted the session file %s", self.describe())

    def _corrupt(self, what: str) -> SessionCorruptError:
        source = self.describe()
        return SessionCorruptError(f"{source}: {what}", store=source)

    # Lease ----------------------------------------------------------------------------

    def lease_key(self) -> str:
        return str(self._lock_path)

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        """Take the lock file, or raise SessionInUseError (naming the holder) at once."""
        _check_lease_args(holder, ttl)
        lease = await anyio.to_thread.run_sync(self._acquire, holder, ttl)
        self._my_holders.add(holder)
        self._fence = holder
        return lease

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        """Rewrite our expiry; LeaseLostError if we no longer hold the lock."""
        _check_lease_args(holder, ttl)
        return await anyio.to_thread.run_sync(self._renew, holder, ttl)

    async def release_lease(self, holder: str) -> None:
        """Unlock if ``holder`` holds the lease (a no-op otherwise)."""
        self._my_holders.discard(holder)
        if self._fence == holder:
            self._fence = None
        await anyio.to_thread.run_sync(self._release, holder)

    async def current_lease(self) -> Lease | None:
        """The lease as seen now: ours or another process's (even past its expiry, since
        a live process keeps its lock), or None when the lock is free."""
        return await anyio.to_thread.run_sync(self._current)

    async def aclose(self) -> None:
        """Release the leases taken through this object."""
        for holder in list(self._my_holders):
            await self.release_lease(holder)

    def _acquire(self, holder: str, ttl: float) -> Lease:
        self._check_dir()
        return _filelock.acquire(self._lock_path, self.describe(), holder, ttl)

    def _renew(self, holder: str, ttl: float) -> Lease:
        return _filelock.renew(self._lock_path, self.describe(), holder, ttl)

    def _release(self, holder: str) -> None:
        _filelock.release(self._lock_path, self.describe(), holder)

    def _current(self) -> Lease | None:
        return _filelock.current(self._lock_path, self.describe())

    # Telethon import ------------------------------------------------------------------

    @staticmethod
    async def import_telethon(path: str | os.PathLike[str]) -> SessionData:
        """Read a Telethon ``.session`` (SQLite) file, read-only and without changing it.

        Returns SessionData so the caller can ``await FileStore(p).save(data)``. A file
        that is not a Telethon session (or holds none) raises SessionCorruptError
        naming it; a missing file raises FileNotFoundError.
        """
        return await anyio.to_thread.run_sync(read_telethon_session, os.fspath(path))
