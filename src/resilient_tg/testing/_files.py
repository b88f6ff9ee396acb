"""Files the test server keeps: uploads in progress and stored documents and photos.

Upload rules follow Telegram's (core.telegram.org/api/files): parts of one upload
have one size, divisible by 1 KB and dividing 512 KB (the last part may be smaller);
part numbers run 0..3999; files over 10 MB go up with ``upload.saveBigFilePart``.
A stored file lives on one DC (the DC of the key that uploaded it) and is immutable,
so messages, re-sends and every DC share one record and one ``bytes`` object.

Not modelled: thumbnails and video/audio attributes (a document keeps its name and
MIME type only; a photo has one size holding the uploaded bytes), CDN DCs, expiring
file references, ``upload.getFileHashes``, premium part limits.

Total bytes (stored files plus parts of unfinished uploads) are capped by
``FileStore.max_bytes`` so that a runaway test fails fast instead of filling memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from telethon.tl import types
from telethon.tl.types import storage as storage_t

KB = 1024
MAX_PART_SIZE = 512 * KB
MAX_PARTS = 4000
BIG_FILE_THRESHOLD = 10 * 1024 * KB
# Default cap on stored bytes per server (stored files plus unfinished uploads).
DEFAULT_MAX_BYTES = 256 * 1024 * KB
FILES_DIR = "files"
# The one size a stored photo has; Telegram's largest standard size is "y" or "w".
PHOTO_SIZE_TYPE = "y"
DEFAULT_MIME = "application/octet-stream"
# Finished uploads remembered for re-use (their bytes are shared with stored files).
MAX_FINISHED = 1000


class FileRuleError(Exception):
    """A request broke an upload or download rule; ``message`` is Telegram's error."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(f"{code} {message}")
        self.message = message
        self.code = code


@attrs.define(eq=False)
class StoredFile:
    """A document or photo on one DC; ``data`` is shared, never copied."""

    id: int
    access_hash: int
    file_reference: bytes
    dc_id: int
    kind: str  # "document" or "photo"
    name: str
    mime_type: str
    date: int
    data: bytes = attrs.field(repr=False)
    width: int = 0
    height: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


@attrs.define(eq=False)
class Upload:
    """Parts received for one client file id on one auth key."""

    big: bool
    total_parts: int | None = None
    parts: dict[int, bytes] = attrs.field(factory=dict)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts.values())


UploadKey = tuple[bytes, int]  # (auth key id, client file id)


@attrs.define(eq=False)
class FileStore:
    """Stored files by id and uploads in progress by (auth key id, file id)."""

    files: dict[int, StoredFile] = attrs.field(factory=dict)
    uploads: dict[UploadKey, Upload] = attrs.field(factory=dict)
    # Uploads already turned into a file: the same InputFile may be sent again.
    finished: dict[UploadKey, bytes] = attrs.field(factory=dict, repr=False)
    max_bytes: int = DEFAULT_MAX_BYTES

    def used_bytes(self) -> int:
        held = self._held()
        return sum(held.values()) + sum(u.size for u in self.uploads.values())

    def _held(self) -> dict[int, int]:
        """Sizes of the distinct ``bytes`` objects kept, by identity (shared ones once)."""
        held = {id(f.data): len(f.data) for f in self.files.values()}
        held.update((id(d), len(d)) for d in self.finished.values())
        return held

    # Uploading --------------------------------------------------------------------

    def save_part(
        self, key: UploadKey, part: int, data: bytes, *, total_parts: int | None = None
    ) -> None:
        """Keep one part (``total_parts`` given for saveBigFilePart)."""
        big = total_parts is not None
        if total_parts is not None and not 0 < total_parts <= MAX_PARTS:
            raise FileRuleError("FILE_PARTS_INVALID")
        if not 0 <= part < (total_parts or MAX_PARTS):
            raise FileRuleError("FILE_PART_INVALID")
        if not data:
            raise FileRuleError("FILE_PART_EMPTY")
        if len(data) > MAX_PART_SIZE:
            raise FileRuleError("FILE_PART_TOO_BIG")
        upload = self.uploads.get(key)
        if upload is None or upload.big != big:
            upload = Upload(big=big, total_parts=total_parts)
        elif total_parts is not None and upload.total_parts != total_parts:
            raise FileRuleError("FILE_PARTS_INVALID")
        old = len(upload.parts.get(part, b""))
        if self.used_bytes() - old + len(data) > self.max_bytes:
            raise FileRuleError("TEST_SERVER_STORAGE_FULL")
        self.finished.pop(key, None)
        upload.parts[part] = data
        self.uploads[key] = upload

    def take_upload(self, key_id: bytes, input_file: Any) -> bytes:
        """The bytes of an ``InputFile``/``InputFileBig`` uploaded on this key.

        The parts are checked as Telegram does when the file is used; a finished
        upload may be used again (same bytes).
        """
        big = isinstance(input_file, types.InputFileBig)
        if not big and not isinstance(input_file, types.InputFile):
            raise FileRuleError("FILE_PARTS_INVALID")
        key = (key_id, input_file.id)
        parts = input_file.parts
        if not 0 < parts <= MAX_PARTS:
            raise FileRuleError("FILE_PARTS_INVALID")
        upload = self.uploads.get(key)
        if upload is None:
            done = self.finished.get(key)
            if done is not None:
                return done
            raise FileRuleError("FILE_PART_0_MISSING")
        if upload.big != big or (big and upload.total_parts != parts):
            raise FileRuleError("FILE_PARTS_INVALID")
        for index in range(parts):
            if index not in upload.parts:
                raise FileRuleError(f"FILE_PART_{index}_MISSING")
        chunks = [upload.parts[i] for i in range(parts)]
        part_size = len(chunks[0])
        if parts > 1 and not _good_part_size(part_size):
            raise FileRuleError("FILE_PART_SIZE_INVALID")
        if any(len(c) != part_size for c in chunks[:-1]) or len(chunks[-1]) > part_size:
            raise FileRuleError("FILE_PART_SIZE_CHANGED")
        data = b"".join(chunks)
        if not big and len(data) > BIG_FILE_THRESHOLD:
            raise FileRuleError("FILE_PARTS_INVALID")  # big files need saveBigFilePart
        checksum = getattr(input_file, "md5_checksum", "")
        if checksum and checksum.lower() != hashlib.md5(data, usedforsecurity=False).hexdigest():
            raise FileRuleError("MD5_CHECKSUM_INVALID")
        del self.uploads[key]
        self.finished[key] = data
        while len(self.finished) > MAX_FINISHED:
            del self.finished[next(iter(self.finished))]
        return data

    # Storing ----------------------------------------------------------------------

    def add(
        self,
        data: bytes,
        *,
        kind: str,
        dc_id: int,
        name: str,
        mime_type: str,
        date: int,
    ) -> StoredFile:
        if kind not in ("document", "photo"):
            raise ValueError(f"kind must be 'document' or 'photo', got {kind!r}")
        extra = 0 if id(data) in self._held() else len(data)
        if self.used_bytes() + extra > self.max_bytes:
            raise FileRuleError("TEST_SERVER_STORAGE_FULL")
        width = height = 0
        if kind == "photo":
            found = image_info(data)
            if found is None:
                raise FileRuleError("IMAGE_PROCESS_FAILED")
            mime_type, width, height = found
        stored = StoredFile(
            id=self._new_id(),
            access_hash=secrets.randbits(63),
            file_reference=secrets.token_bytes(16),
            dc_id=dc_id,
            kind=kind,
            name=name,
            mime_type=mime_type or DEFAULT_MIME,
            date=date,
            data=data,
            width=width,
            height=height,
        )
        self.files[stored.id] = stored
        return stored

    def find(self, file_id: int, access_hash: int, kind: str) -> StoredFile | None:
        stored = self.files.get(file_id)
        if stored is None or stored.access_hash != access_hash or stored.kind != kind:
            return None
        return stored

    def _new_id(self) -> int:
        while True:
            file_id = secrets.randbits(62) + 1
            if file_id not in self.files:
                return file_id

    # Persistence (metadata in the world's JSON, bytes in files/<id>.bin) -----------

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "id": f.id,
                "access_hash": f.access_hash,
                "file_reference": f.file_reference.hex(),
                "dc_id": f.dc_id,
                "kind": f.kind,
                "name": f.name,
                "mime_type": f.mime_type,
                "date": f.date,
                "width": f.width,
                "height": f.height,
                "size": f.size,
            }
            for f in self.files.values()
        ]

    def save_blobs(self, data_dir: Path, files: Iterable[StoredFile] | None = None) -> None:
        """Write each file's bytes once (files never change), 0600, and drop stale ones;
        ``files`` (default: this store's) is a list taken earlier, for a thread."""
        folder = data_dir / FILES_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        listed = self.files.values() if files is None else files
        wanted = {_blob_name(f.id): f for f in listed}
        for name, stored in wanted.items():
            path = folder / name
            if path.exists() and path.stat().st_size == stored.size:
                continue
            _write_atomic(folder, path, stored.data)
        for path in folder.glob("*.bin"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)

    @classmethod
    def from_json(
        cls,
        raw: list[dict[str, Any]],
        data_dir: Path | None,
        blobs: Mapping[int, bytes] | None = None,
    ) -> FileStore:
        """The files ``raw`` lists, their bytes from ``blobs`` (by file id) when given,
        else from ``data_dir``."""
        store = cls()
        for item in raw:
            file_id = int(item["id"])
            data = b""
            if blobs is not None:
                data = blobs.get(file_id, b"")
            elif data_dir is not None:
                data = (data_dir / FILES_DIR / _blob_name(file_id)).read_bytes()
            if len(data) != int(item["size"]):
                raise ValueError(f"stored file {file_id} has {len(data)} bytes, not {item['size']}")
            store.files[file_id] = StoredFile(
                id=file_id,
                access_hash=int(item["access_hash"]),
                file_reference=bytes.fromhex(item["file_reference"]),
                dc_id=int(item["dc_id"]),
                kind=str(item["kind"]),
                name=str(item["name"]),
                mime_type=str(item["mime_type"]),
                date=int(item["date"]),
                data=data,
                width=int(item["width"]),
                height=int(item["height"]),
            )
        return store


# TL objects ---------------------------------------------------------------------------


def tl_document(f: StoredFile) -> types.Document:
    return types.Document(
        id=f.id,
        access_hash=f.access_hash,
        file_reference=f.file_reference,
        date=_date(f.date),
        mime_type=f.mime_type,
        size=f.size,
        dc_id=f.dc_id,
        attributes=[types.DocumentAttributeFilename(file_name=f.name)],
    )


def tl_photo(f: StoredFile) -> types.Photo:
    return types.Photo(
        id=f.id,
        access_hash=f.access_hash,
        file_reference=f.file_reference,
        date=_date(f.date),
        sizes=[types.PhotoSize(type=PHOTO_SIZE_TYPE, w=f.width, h=f.height, size=f.size)],
        dc_id=f.dc_id,
    )


def tl_media(f: StoredFile) -> Any:
    if f.kind == "photo":
        return types.MessageMediaPhoto(photo=tl_photo(f))
    return types.MessageMediaDocument(document=tl_document(f))


def storage_type(f: StoredFile) -> Any:
    if f.mime_type == "image/jpeg":
        return storage_t.FileJpeg()
    if f.mime_type == "image/png":
        return storage_t.FilePng()
    return storage_t.FileUnknown()


# Images -------------------------------------------------------------------------------


def image_info(data: bytes) -> tuple[str, int, int] | None:
    """(mime type, width, height) of a PNG or JPEG, or None if it is neither."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if pos + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return "image/jpeg", width, height
            pos += 2 + length
    return None


def _good_part_size(size: int) -> bool:
    return size % KB == 0 and MAX_PART_SIZE % size == 0


def _blob_name(file_id: int) -> str:
    return f"{file_id:016x}.bin"


def _write_atomic(folder: Path, path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".file-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _date(timestamp: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
