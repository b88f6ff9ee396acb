"""Control calls for files on MTProtoTestServer: inject a file, read one back, cap storage."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio.lowlevel
import attrs

from ._files import DEFAULT_MAX_BYTES, DEFAULT_MIME, FileRuleError

if TYPE_CHECKING:
    from ._world import Account, StoredMessage, World


@attrs.frozen
class FileInfo:
    """What the server knows about a stored file (its bytes: `file_bytes`)."""

    id: int
    dc_id: int
    kind: str  # "document" or "photo"
    name: str
    mime_type: str
    size: int


class FileControl:
    """Mixed into MTProtoTestServer; the file part of its control API."""

    _file_bytes_limit: int = DEFAULT_MAX_BYTES

    if TYPE_CHECKING:
        _world: World

        @property
        def dc_id(self) -> int: ...

        @property
        def dc_ids(self) -> tuple[int, ...]: ...

        def _account(self, user_id: int) -> Account: ...

        def _push_new_message(
            self,
            sender: Account,
            recipient: Account,
            out: StoredMessage,
            incoming: StoredMessage | None,
            *,
            skip_session: int | None,
        ) -> None: ...

    @property
    def file_bytes_limit(self) -> int:
        """Cap on bytes the server holds in files and unfinished uploads (256 MiB by
        default); beyond it uploads fail with 400 TEST_SERVER_STORAGE_FULL."""
        return self._file_bytes_limit

    @file_bytes_limit.setter
    def file_bytes_limit(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"file_bytes_limit must be >= 0, got {value}")
        self._file_bytes_limit = value

    async def send_file(
        self,
        from_id: int,
        to_id: int,
        data: bytes,
        *,
        name: str = "file.bin",
        mime_type: str = DEFAULT_MIME,
        photo: bool = False,
        caption: str = "",
        dc_id: int | None = None,
    ) -> int:
        """Send ``data`` as a document (or a PNG/JPEG ``photo``) from ``from_id`` to
        ``to_id``, stored on ``dc_id`` (default: the server's DC), without a client.

        Updates go to every connected session of both accounts. Returns the message id
        in the recipient's box; `message_file` finds the file from it.
        """
        sender, recipient = self._account(from_id), self._account(to_id)
        where = self.dc_id if dc_id is None else dc_id
        if where not in self.dc_ids:
            raise ValueError(f"dc_id {where} is not served (DCs: {self.dc_ids})")
        if not isinstance(data, bytes) or not data:
            raise ValueError("data must be non-empty bytes")
        store = self._world.files
        store.max_bytes = self._file_bytes_limit
        try:
            stored = store.add(
                data,
                kind="photo" if photo else "document",
                dc_id=where,
                name=name,
                mime_type=mime_type,
                date=int(time.time()),
            )
        except FileRuleError as exc:
            raise ValueError(f"cannot store the file: {exc.message}") from None
        out, incoming = self._world.deliver(sender, recipient, caption, None, media_id=stored.id)
        self._push_new_message(sender, recipient, out, incoming, skip_session=None)
        await anyio.lowlevel.checkpoint()
        return (incoming or out).id

    def message_file(self, user_id: int, message_id: int) -> FileInfo:
        """The file attached to message ``message_id`` in ``user_id``'s box."""
        account = self._account(user_id)
        message = next((m for m in account.box if m.id == message_id), None)
        if message is None or message.media_id is None:
            raise LookupError(f"user {user_id} has no message {message_id} with a file")
        return self.file_info(message.media_id)

    def file_info(self, file_id: int) -> FileInfo:
        """What is stored under ``file_id`` (a Document's or Photo's ``id``)."""
        stored = self._world.files.files.get(file_id)
        if stored is None:
            raise LookupError(f"no stored file with id {file_id}")
        return FileInfo(
            id=stored.id,
            dc_id=stored.dc_id,
            kind=stored.kind,
            name=stored.name,
            mime_type=stored.mime_type,
            size=stored.size,
        )

    def file_bytes(self, file_id: int) -> bytes:
        """The bytes stored under ``file_id``."""
        stored = self._world.files.files.get(file_id)
        if stored is None:
            raise LookupError(f"no stored file with id {file_id}")
        return stored.data
