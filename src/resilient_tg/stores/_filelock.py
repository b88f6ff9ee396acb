"""The FileStore lease: an exclusive ``flock`` on a lock file next to the session.

The kernel drops a flock when the holding process exits, however it exits. The lock
file's content (holder, expiry, fencing token, pid) is what other processes show in
SessionInUseError. Every FileStore object on one path in a process shares one lock
(`_HELD`); among them the TTL rules, as for the default lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from .._errors import LeaseLostError, SessionInUseError
from .._safefile import make_private_dirs, open_nofollow, same_file
from ._base import Lease

log = logging.getLogger("resilient_tg.stores")

_LOCK_READ_TRIES = 5


@attrs.define
class _Held:
    fd: int
    lease: Lease


# Lock files this process holds, by path: every FileStore object on one path shares it.
_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()


def acquire(lock_path: Path, where: str, holder: str, ttl: float) -> Lease:
    """Lock ``lock_path`` for ``holder``, or raise SessionInUseError at once."""
    key = str(lock_path)
    with _HELD_LOCK:
        now = time.time()
        held = _HELD.get(key)
        if held is not None and not same_file(held.fd, lock_path):
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
        fd = _open_locked(lock_path, where)
        for attempt in range(_LOCK_READ_TRIES):
            if fd is not None:
                break
            other = _read_lock_record_retrying(lock_path)
            if other.expires_at > time.time() or attempt == _LOCK_READ_TRIES - 1:
                raise _in_use(where, other, time.time(), lock_path=lock_path)
            # Released or expired: the lock may have just been dropped, or be briefly
            # probed by current_lease() in another process. Look again shortly.
            time.sleep(0.01 * (attempt + 1))  # runs in a worker thread
            fd = _open_locked(lock_path, where)
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


def renew(lock_path: Path, where: str, holder: str, ttl: float) -> Lease:
    """Rewrite the holder's expiry; LeaseLostError if it no longer holds the lock."""
    key = str(lock_path)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None or held.lease.holder != holder:
            raise LeaseLostError(
                f"{where}: our lease is gone"
                + (f" (now held by {held.lease.holder})" if held is not None else ""),
                store=where,
                holder=holder,
            )
        if not same_file(held.fd, lock_path):
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


def release(lock_path: Path, where: str, holder: str) -> None:
    """Unlock if ``holder`` holds the lock (a no-op otherwise)."""
    key = str(lock_path)
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
    log.debug("%s: lease released by %s", where, holder)


def current(lock_path: Path, where: str) -> Lease | None:
    """The lease on ``lock_path`` as seen now: ours, another process's (even past its
    expiry, since a live process keeps its lock), or None when the lock is free."""
    key = str(lock_path)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None:
            return held.lease if held.lease.expires_at > time.time() else None
        try:
            fd = open_nofollow(
                lock_path,
                os.O_RDONLY,
                what=f"{where}: the lock file {lock_path}",
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


@contextlib.contextmanager
def fenced(lock_path: Path, where: str, holder: str | None) -> Iterator[None]:
    """Writes of a store object that took a lease happen only while it holds it.

    Another process cannot take a live process's lock, but in this process an
    expired lease can be taken over, and a removed lock file voids ours: a writer
    that lost its lease must not overwrite the new holder's session.
    """
    if holder is None:
        yield
        return
    with _HELD_LOCK:
        held = _HELD.get(str(lock_path))
        if held is None or held.lease.holder != holder:
            raise LeaseLostError(
                f"{where}: not written, the lease of {holder} was taken over"
                + (f" by {held.lease.holder}" if held is not None else ""),
                store=where,
                holder=holder,
            )
        if not same_file(held.fd, lock_path):
            raise LeaseLostError(
                f"{where}: not written, the lock file was removed or replaced",
                store=where,
                holder=holder,
            )
        yield


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
