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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs

from .._errors import LeaseLostError, SessionCorruptError, SessionInUseError
from .._safefile import (
    check_private_dir,
    fsync_dir,
    make_private_dirs,
    open_nofollow,
    remove_stale_temp_files,
    same_file,
    write_atomically,
)
from ._base import Lease, SessionStore, _check_lease_args
from ._data import AUTH_KEY_SIZE, Entity, SessionData, UpdateState, decode, encode
from ._encryption import MAGIC, Encryptor, resolve_key

__all__ = ["FileStore"]

log = logging.getLogger("resilient_tg.stores")

_SQLITE_MAGIC = b"SQLite format 3\x00"
# Bound into every sealed file. Deliberately not the path: a backup restored to
# another directory (or a volume mounted elsewhere) must still open with its key.
_CRYPTO_CONTEXT = "resilient_tg.FileStore"
_LOCK_READ_TRIES = 5


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

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[None]:
        """Writes of a store object that took a lease happen only while it holds it.

        Another process cannot take a live process's lock, but in this process an
        expired lease can be taken over, and a removed lock file voids ours: a writer
        that lost its lease must not overwrite the new holder's session.
        """
        holder = self._fence
        if holder is None:
            yield
            return
        with _HELD_LOCK:
            held = _HELD.get(str(self._lock_path))
            if held is None or held.lease.holder != holder:
                raise LeaseLostError(
                    f"{self.describe()}: not written, the lease of {holder} was taken over"
                    + (f" by {held.lease.holder}" if held is not None else ""),
                    store=self.describe(),
                    holder=holder,
                )
            if not same_file(held.fd, self._lock_path):
                raise LeaseLostError(
                    f"{self.describe()}: not written, the lock file was removed or replaced",
                    store=self.describe(),
                    holder=holder,
                )
            yield

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
        if raw.startswith(_SQLITE_MAGIC):
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
        key = str(self._lock_path)
        where = self.describe()
        self._check_dir()
        with _HELD_LOCK:
            now = time.time()
            held = _HELD.get(key)
            if held is not None and not same_file(held.fd, self._lock_path):
                # The lock file was removed or replaced under us: our lock guards nothing.
                del _HELD[key]
                os.close(held.fd)
                held = None
            if held is not None:
                # This process holds the lock: the holders in it share it, TTL rules.
                if held.lease.holder != holder and held.lease.expires_at > now:
                    raise _in_use(where, held.lease, now, same_process=True)
                if held.lease.holder != holder:
                    log.warning(
                        "%s: lease of %s expired %.1fs ago; %s takes it over",
                        where,
                        held.lease.holder,
                        now - held.lease.expires_at,
                        holder,
                    )
                    token = held.lease.token + 1
                else:
                    token = held.lease.token
                new_holder = held.lease.holder != holder
                held.lease = Lease(holder=holder, expires_at=now + ttl, token=token)
                _write_lock_record(held.fd, held.lease, sync=new_holder)
                return held.lease
            fd = _open_locked(self._lock_path, where)
            for attempt in range(_LOCK_READ_TRIES):
                if fd is not None:
                    break
                other = _read_lock_record_retrying(self._lock_path)
                if other.expires_at > time.time() or attempt == _LOCK_READ_TRIES - 1:
                    raise _in_use(where, other, time.time(), lock_path=self._lock_path)
                # Released or expired: the lock may have just been dropped, or be briefly
                # probed by current_lease() in another process. Look again shortly.
                time.sleep(0.01 * (attempt + 1))  # runs in a worker thread
                fd = _open_locked(self._lock_path, where)
            assert fd is not None
            try:
                previous = _read_lock_record_fd(fd)
                token = (previous.token if previous is not None else 0) + 1
                lease = Lease(holder=holder, expires_at=time.time() + ttl, token=token)
                _write_lock_record(fd, lease, sync=True)
            except BaseException:
                os.close(fd)  # closing drops the flock
                raise
            _HELD[key] = _Held(fd=fd, lease=lease)
            log.debug("%s: lease taken by %s (token %d)", where, holder, token)
            return lease

    def _renew(self, holder: str, ttl: float) -> Lease:
        key = str(self._lock_path)
        where = self.describe()
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is None or held.lease.holder != holder:
                raise LeaseLostError(
                    f"{where}: our lease is gone"
                    + (f" (now held by {held.lease.holder})" if held is not None else ""),
                    store=where,
                    holder=holder,
                )
            if not same_file(held.fd, self._lock_path):
                # Someone removed or replaced the lock file: another process may lock the
                # new one, so ours protects nothing any more.
                del _HELD[key]
                os.close(held.fd)
                raise LeaseLostError(
                    f"{where}: the lock file was removed or replaced; our lease is void",
                    store=where,
                    holder=holder,
                )
            held.lease = Lease(holder=holder, expires_at=time.time() + ttl, token=held.lease.token)
            _write_lock_record(held.fd, held.lease, sync=False)
            return held.lease

    def _release(self, holder: str) -> None:
        key = str(self._lock_path)
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is None or held.lease.holder != holder:
                return
            del _HELD[key]
            try:
                released = attrs.evolve(held.lease, expires_at=time.time())
                with contextlib.suppress(OSError):
                    _write_lock_record(held.fd, released, sync=True)
            finally:
                os.close(held.fd)  # drops the flock
        log.debug("%s: lease released by %s", self.describe(), holder)

    def _current(self) -> Lease | None:
        key = str(self._lock_path)
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is not None:
                return held.lease if held.lease.expires_at > time.time() else None
            try:
                fd = open_nofollow(
                    self._lock_path,
                    os.O_RDONLY,
                    what=f"{self.describe()}: the lock file {self._lock_path}",
                )
            except FileNotFoundError:
                return None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return _read_lock_record_fd(fd) or Lease(holder="", expires_at=0.0)
                return None  # free: closing drops our probe
            finally:
                os.close(fd)

    # Telethon import ------------------------------------------------------------------

    @staticmethod
    async def import_telethon(path: str | os.PathLike[str]) -> SessionData:
        """Read a Telethon ``.session`` (SQLite) file, read-only and without changing it.

        Returns SessionData so the caller can ``await FileStore(p).save(data)``. A file
        that is not a Telethon session (or holds none) raises SessionCorruptError
        naming it; a missing file raises FileNotFoundError.
        """
        return await anyio.to_thread.run_sync(_read_telethon, os.fspath(path))


# Files and directories ------------------------------------------------------------------


# Lock file ------------------------------------------------------------------------------


@attrs.define
class _Held:
    fd: int
    lease: Lease


# Lock files this process holds, by path: every FileStore object on one path shares it.
_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()


def _open_locked(lock_path: Path, where: str) -> int | None:
    """An fd holding an exclusive flock on the lock file, or None if another open file
    (another process, or another fd of ours) holds it."""
    make_private_dirs(lock_path.parent)
    while True:
        # Never through a link: its target would be truncated, written and chmod-ed.
        fd = open_nofollow(
            lock_path, os.O_RDWR | os.O_CREAT, 0o600, what=f"{where}: the lock file {lock_path}"
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if same_file(fd, lock_path):
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                os.fchmod(fd, 0o600)
            return fd
        os.close(fd)  # the file was replaced between open and flock: lock the new one


def _write_lock_record(fd: int, lease: Lease, *, sync: bool) -> None:
    record = json.dumps(
        {
            "holder": lease.holder,
            "expires_at": lease.expires_at,
            "token": lease.token,
            "pid": os.getpid(),
        }
    ).encode()
    os.pwrite(fd, record, 0)
    os.ftruncate(fd, len(record))
    if sync:
        os.fsync(fd)


def _read_lock_record_fd(fd: int) -> Lease | None:
    try:
        raw = os.pread(fd, 64 * 1024, 0)
        doc = json.loads(raw)
        return Lease(
            holder=str(doc["holder"]),
            expires_at=float(doc["expires_at"]),
            token=int(doc["token"]),
        )
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None


def _read_lock_record_retrying(lock_path: Path) -> Lease:
    """The holder's record; a holder that has just locked may not have written it yet."""
    for attempt in range(_LOCK_READ_TRIES):
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            break
        try:
            lease = _read_lock_record_fd(fd)
        finally:
            os.close(fd)
        if lease is not None:
            return lease
        time.sleep(0.01 * (attempt + 1))  # runs in a worker thread
    return Lease(holder="", expires_at=0.0)


def _in_use(
    where: str,
    lease: Lease,
    now: float,
    *,
    same_process: bool = False,
    lock_path: Path | None = None,
) -> SessionInUseError:
    """What a FileStore lease is, in words: another process's lease lasts while that
    process lives and holds the lock file (its TTL is only what it last wrote); a
    holder in this process keeps it until its TTL runs out."""
    who = lease.holder or "another process (holder not recorded)"
    if same_process:
        when = f"in this process, until its lease expires in {lease.expires_at - now:.1f}s"
    else:
        lock = f" {lock_path}" if lock_path is not None else ""
        when = (
            f"in another process, which holds the lock file{lock}; a FileStore lease "
            "lasts as long as its process runs and frees the moment that process "
            "releases it or exits"
        )
        if 0 < lease.expires_at <= now:
            when += (
                f" (it stopped renewing: its lease expired {now - lease.expires_at:.1f}s ago, "
                "but its process is alive and still holds the lock file)"
            )
    return SessionInUseError(
        f"{where}: the session is leased to {who} {when}",
        store=where,
        holder=lease.holder,
        expires_at=lease.expires_at or None,
    )


# Telethon .session import ---------------------------------------------------------------


def _read_telethon(name: str) -> SessionData:
    path = Path(os.path.abspath(name))
    where = str(path)

    def corrupt(what: str) -> SessionCorruptError:
        return SessionCorruptError(f"Telethon session file {where}: {what}", store=path.as_uri())

    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "no Telethon session file at this path", where
        ) from None
    except OSError as exc:
        raise corrupt(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if header != _SQLITE_MAGIC:
        raise corrupt("not a SQLite database, so not a Telethon .session file")
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise corrupt(f"cannot be opened read-only ({_sqlite_reason(exc)})") from None
    try:
        return _telethon_rows(conn, corrupt)
    except sqlite3.Error as exc:
        raise corrupt(f"not a readable Telethon session ({_sqlite_reason(exc)})") from None
    except UnicodeDecodeError:  # damaged text in the schema or a row
        raise corrupt("not a readable Telethon session (damaged text, not UTF-8)") from None
    except RecursionError:  # pragma: no cover - defensive
        raise corrupt("not a readable Telethon session") from None
    finally:
        conn.close()


def _telethon_rows(conn: sqlite3.Connection, corrupt: Any) -> SessionData:
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    if not {"version", "sessions"} <= tables:
        raise corrupt("has no Telethon 'version'/'sessions' tables")
    cur = conn.execute("select * from sessions")
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    if not rows or rows[0][columns.index("dc_id") if "dc_id" in columns else 0] in (0, None):
        # Telethon writes a row with dc_id 0 when it creates the file, before any connect.
        raise corrupt("holds no session to import (Telethon never connected with it)")
    if len(rows) > 1:
        raise corrupt(f"holds {len(rows)} sessions; Telethon writes one")
    row = dict(zip(columns, rows[0], strict=True))
    missing = {"dc_id", "server_address", "port", "auth_key"} - row.keys()
    if missing:
        raise corrupt(f"sessions table lacks column(s) {', '.join(sorted(missing))}")
    key = row["auth_key"]
    if key in (None, b""):
        auth_key = None
    elif isinstance(key, bytes) and len(key) == AUTH_KEY_SIZE:
        auth_key = key
    else:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise corrupt(f"auth key has the wrong size or type ({size}, need {AUTH_KEY_SIZE} bytes)")

    state: UpdateState | None = None
    entities: list[Entity] = []
    try:
        if "update_state" in tables:
            account: tuple[Any, ...] | None = None
            channels: dict[int, int] = {}
            for sid, pts, qts, date, seq in conn.execute(
                "select id, pts, qts, date, seq from update_state"
            ):
                if sid == 0:
                    account = (pts, qts, date, seq)
                else:
                    channels[_as_int(sid)] = _as_int(pts)
            if account is not None or channels:
                pts, qts, date, seq = account or (0, 0, 0, 0)
                state = UpdateState(
                    pts=_as_int(pts),
                    qts=_as_int(qts),
                    date=_as_int(date),
                    seq=_as_int(seq),
                    channels=channels,
                )
        if "entities" in tables:
            for eid, ehash, username, phone, name in conn.execute(
                "select id, hash, username, phone, name from entities"
            ):
                entities.append(
                    Entity(
                        id=_as_int(eid),
                        access_hash=_as_int(ehash),
                        username=_as_opt_str(username),
                        phone=None if phone is None else str(_as_phone(phone)),
                        name=_as_opt_str(name),
                    )
                )
        takeout = row.get("takeout_id")
        return SessionData(
            dc_id=_as_int(row["dc_id"]),
            server_address=_as_opt_str(row["server_address"]) or "",
            port=_as_int(row["port"]),
            auth_key=auth_key,
            takeout_id=None if takeout is None else _as_int(takeout),
            update_state=state,
            entities=tuple(entities),
            # A Telethon file holds a session someone logged in: a 401 means it was revoked.
            ever_authorized=auth_key is not None,
        )
    except (TypeError, ValueError) as exc:
        # Name the field, never the value (it could be key material).
        text = str(exc)
        field = text.split(" must ")[0] if " must " in text else "a value has the wrong type"
        raise corrupt(f"has an invalid field ({field})") from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("a number must be finite")
        return int(value)
    return value


def _as_phone(value: Any) -> str:
    # Telethon's phone column has integer affinity: digits come back as an int.
    if isinstance(value, str):
        return value
    return str(_as_int(value))


def _as_opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("expected text")


def _sqlite_reason(exc: sqlite3.Error) -> str:
    # SQLite's messages ("file is not a database", "no such column: x") hold no data.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
