"""Opening and replacing files without following links planted at their paths.

Shared by FileStore (session, lock and temp files) and the status file. A symbolic
link at a path we open is refused (``O_NOFOLLOW``), never followed: another local
user who can create entries in the directory must not make us truncate, write or
chmod a file of their choosing. Links in the directory part of a path are followed;
they are the operator's choice. Replacement is temp file + ``os.replace``, with a
temp name no one can guess, created ``O_EXCL``.

Everything here blocks; callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "TMP_MARK",
    "check_private_dir",
    "fsync_dir",
    "make_private_dirs",
    "open_nofollow",
    "refuse_link",
    "remove_stale_temp_files",
    "same_file",
    "write_atomically",
]

log = logging.getLogger("resilient_tg.stores")

TMP_MARK = ".tmp."


def _link_error(what: str) -> PermissionError:
    return PermissionError(
        f"{what} is a symbolic link; refusing to follow it (remove the link, "
        "or point at the real file)"
    )


def open_nofollow(path: Path, flags: int, mode: int = 0o600, *, what: str) -> int:
    """``os.open`` with O_NOFOLLOW and O_CLOEXEC; a link at ``path`` raises
    PermissionError starting with ``what`` (which names the path, or the store and the
    path's role)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(what) from None
        raise


def refuse_link(path: Path, *, what: str) -> None:
    """Raise PermissionError if ``path`` is a symbolic link (a missing path is fine)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(what)


def check_private_dir(directory: Path, *, what: str, opt_out: str) -> None:
    """Refuse a directory writable by group or others: anyone who can write it can
    replace or remove our files. The error starts with ``what`` (naming the directory
    or its role) and ends with ``opt_out`` (how to accept it anyway)."""
    try:
        mode = stat.S_IMODE(os.stat(directory).st_mode)
    except FileNotFoundError:
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(
            name
            for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "all users"))
            if mode & bit
        )
        raise PermissionError(
            f"{what} is writable by {who} (mode {mode:04o}), so another user "
            f"could replace or remove the files in it; refused: run `chmod go-w` on it, "
            f"or {opt_out}"
        )


def make_private_dirs(directory: Path) -> None:
    """Create missing directories 0700 each (umask notwithstanding); existing ones are
    left as they are."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: not ours to chmod
        # Through an fd opened without following links: if the new directory was
        # swapped for a link meanwhile, this fails instead of chmod-ing its target.
        fd = open_nofollow(d, os.O_RDONLY | os.O_DIRECTORY, what=f"the new directory {d}")
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (read-only open; nothing is changed)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not replaced or removed meanwhile)."""
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _create_temp(directory: Path, name: str, mode: int) -> tuple[Path, int]:
    """A new temp file beside ``name``, flock'ed while it is being written so that a
    cleaner in another process can tell a live writer from a dead one."""
    while True:
        tmp = directory / f".{name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(8)}"
        try:
            fd = open_nofollow(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, what=f"the temp file path {tmp}"
            )
        except FileExistsError:
            continue  # something (a planted link included) took this name: pick another
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, mode)  # exactly this mode, whatever the umask
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if same_file(fd, tmp):
            return tmp, fd
        # A cleaner removed it between create and flock: start again.
        os.close(fd)


def remove_stale_temp_files(directory: Path, name: str) -> None:
    """Remove temp files left by writers that died mid-save (nobody holds their flock).
    Entries that are not regular files (a planted link) are left alone, never opened
    through."""
    prefix = f".{name}{TMP_MARK}"
    try:
        entries = [e for e in os.listdir(directory) if e.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        path = directory / entry
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # renamed or removed meanwhile, or a link
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            if same_file(fd, path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    log.debug("removed a temp file left by an interrupted write: %s", entry)
        finally:
            os.close(fd)


def write_atomically(
    path: Path, payload: bytes, *, mode: int = 0o600, durable: bool = True, what: str
) -> None:
    """Replace ``path`` with ``payload``: a fresh temp file in the same directory
    (``O_EXCL | O_NOFOLLOW``, exactly ``mode``), written, fsync'ed when ``durable``,
    renamed over ``path`` (and the directory fsync'ed when ``durable``). A reader
    sees the old or the new content, never a mix. A link at ``path`` is refused
    (PermissionError naming ``what``) rather than replaced. The directory must exist.
    """
    directory = path.parent
    refuse_link(path, what=what)
    tmp, fd = _create_temp(directory, path.name, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
            os.replace(tmp, path)
        finally:
            os.close(fd)  # after the rename: the flock marks the temp file as live
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)
