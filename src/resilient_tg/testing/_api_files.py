"""File methods: upload.saveFilePart/saveBigFilePart, messages.sendMedia, upload.getFile.

Records and upload rules live in `._files`; this module maps them onto requests.
A file is served by the DC it is stored on; asked elsewhere, getFile answers
303 FILE_MIGRATE_X as Telegram does, and Telethon retries through an exported sender.
"""

from __future__ import annotations

import time
from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import upload as upload_t

from ._api import Api, CallContext, RpcFailure, _date, _method
from ._files import DEFAULT_MIME, FileRuleError, FileStore, StoredFile, storage_type
from ._world import Account, StoredMessage

MB = 1024 * 1024
CAPTION_LENGTH_MAX = 1024


def _files(api: Api) -> FileStore:
    store = api.world.files
    store.max_bytes = api._server.file_bytes_limit
    return store


# upload -------------------------------------------------------------------------------


@_method(functions.upload.SaveFilePartRequest)
def _save_file_part(api: Api, request: Any, ctx: CallContext) -> bool:
    try:
        key = (ctx.record.key_id, request.file_id)
        _files(api).save_part(key, request.file_part, request.bytes)
    except FileRuleError as exc:
        raise RpcFailure(exc.code, exc.message) from None
    return True


@_method(functions.upload.SaveBigFilePartRequest)
def _save_big_file_part(api: Api, request: Any, ctx: CallContext) -> bool:
    try:
        _files(api).save_part(
            (ctx.record.key_id, request.file_id),
            request.file_part,
            request.bytes,
            total_parts=request.file_total_parts,
        )
    except FileRuleError as exc:
        raise RpcFailure(exc.code, exc.message) from None
    return True


def check_range(offset: int, limit: int, *, precise: bool) -> None:
    """Telegram's getFile rules: aligned offset and limit, never across a 1 MB boundary."""
    align = 1024 if precise else 4096
    if offset < 0 or offset % align:
        raise RpcFailure(400, "OFFSET_INVALID")
    if limit <= 0 or limit % align or limit > MB or (not precise and MB % limit):
        raise RpcFailure(400, "LIMIT_INVALID")
    if offset // MB != (offset + limit - 1) // MB:
        raise RpcFailure(400, "LIMIT_INVALID")


def _locate(store: FileStore, location: Any) -> StoredFile:
    if isinstance(location, types.InputDocumentFileLocation):
        stored = store.find(location.id, location.access_hash, "document")
        if stored is not None and location.thumb_size:
            raise RpcFailure(400, "LOCATION_INVALID")  # documents have no thumbnails here
    elif isinstance(location, types.InputPhotoFileLocation):
        stored = store.find(location.id, location.access_hash, "photo")
        if stored is not None and location.thumb_size not in ("", "y", "x", "w"):
            raise RpcFailure(400, "LOCATION_INVALID")
    else:
        raise RpcFailure(400, "LOCATION_INVALID")
    if stored is None:
        raise RpcFailure(400, "FILE_ID_INVALID")
    return stored


@_method(functions.upload.GetFileRequest)
def _get_file(api: Api, request: Any, ctx: CallContext) -> upload_t.File:
    check_range(request.offset, request.limit, precise=bool(request.precise))
    stored = _locate(_files(api), request.location)
    if stored.dc_id != ctx.dc_id:
        raise RpcFailure(303, f"FILE_MIGRATE_{stored.dc_id}")
    return upload_t.File(
        type=storage_type(stored),
        mtime=stored.date,
        bytes=stored.data[request.offset : request.offset + request.limit],
    )


# messages.sendMedia -------------------------------------------------------------------


def _file_name(input_file: Any, attributes: list[Any]) -> str:
    for attribute in attributes:
        if isinstance(attribute, types.DocumentAttributeFilename):
            return str(attribute.file_name)
    return str(getattr(input_file, "name", "") or "file")


def _media_file(api: Api, media: Any, ctx: CallContext) -> StoredFile:
    """The stored file a sendMedia request attaches: a new upload or an existing file."""
    store = _files(api)
    try:
        if isinstance(media, types.InputMediaUploadedDocument):
            data = store.take_upload(ctx.record.key_id, media.file)
            return store.add(
                data,
                kind="document",
                dc_id=ctx.dc_id,
                name=_file_name(media.file, media.attributes or []),
                mime_type=media.mime_type or DEFAULT_MIME,
                date=int(time.time()),
            )
        if isinstance(media, types.InputMediaUploadedPhoto):
            data = store.take_upload(ctx.record.key_id, media.file)
            return store.add(
                data,
                kind="photo",
                dc_id=ctx.dc_id,
                name=_file_name(media.file, []),
                mime_type="",
                date=int(time.time()),
            )
    except FileRuleError as exc:
        raise RpcFailure(exc.code, exc.message) from None
    if isinstance(media, types.InputMediaDocument) and isinstance(media.id, types.InputDocument):
        found = store.find(media.id.id, media.id.access_hash, "document")
    elif isinstance(media, types.InputMediaPhoto) and isinstance(media.id, types.InputPhoto):
        found = store.find(media.id.id, media.id.access_hash, "photo")
    else:
        raise RpcFailure(400, "MEDIA_INVALID")
    if found is None:
        raise RpcFailure(400, "MEDIA_INVALID")
    return found


@_method(functions.messages.SendMediaRequest)
def _send_media(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    peer = api.resolve_peer(request.peer, me)
    caption = request.message or ""
    if len(caption) > CAPTION_LENGTH_MAX:
        raise RpcFailure(400, "MEDIA_CAPTION_TOO_LONG")
    if request.random_id in me.random_ids:
        raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
    if me.bot and peer.bot:
        raise RpcFailure(400, "USER_IS_BOT")
    stored = _media_file(api, request.media, ctx)
    out, incoming = api.world.deliver(me, peer, caption, request.random_id, media_id=stored.id)
    server = api._server
    server._on_world_changed()
    server._push_new_message(me, peer, out, incoming, skip_session=ctx.session_id)
    return sent_updates(api, me, peer, out, request.random_id)


def sent_updates(
    api: Api, me: Account, peer: Account, out: StoredMessage, random_id: int
) -> types.Updates:
    """What the sender gets back: the id for its random_id, and the message itself."""
    return types.Updates(
        updates=[
            types.UpdateMessageID(id=out.id, random_id=random_id),
            types.UpdateNewMessage(message=api.tl_message(out), pts=out.pts, pts_count=1),
        ],
        users=[api.tl_user(peer, me), api.tl_user(me, me)],
        chats=[],
        date=_date(out.date),
        seq=0,
    )
