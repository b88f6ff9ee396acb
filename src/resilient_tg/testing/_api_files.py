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

from ._api_base import Api, CallContext, RpcFailure, _date, _method
from ._files import (
    DEFAULT_MIME,
    PHOTO_SIZE_TYPE,
    FileRuleError,
    FileStore,
    StoredFile,
    storage_type,
    tl_media,
)
from ._world import Account, StoredMessage

MB = 1024 * 1024
CAPTION_LENGTH_MAX = 1024
ALBUM_MAX = 10


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
        if stored is not None and location.thumb_size != PHOTO_SIZE_TYPE:
            raise RpcFailure(400, "LOCATION_INVALID")  # the one size a photo has here
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


def _media_file(api: Api, media: Any, ctx: CallContext, *, uploaded: bool = True) -> StoredFile:
    """The stored file a request attaches: a new upload (if ``uploaded`` is allowed)
    or an existing file."""
    store = _files(api)
    if not uploaded and isinstance(
        media, (types.InputMediaUploadedDocument, types.InputMediaUploadedPhoto)
    ):
        raise RpcFailure(400, "MEDIA_INVALID")  # albums take uploadMedia results only
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


def _check_send(me: Account, peer: Account, caption: str, random_id: int) -> None:
    if len(caption) > CAPTION_LENGTH_MAX:
        raise RpcFailure(400, "MEDIA_CAPTION_TOO_LONG")
    if random_id in me.random_ids:
        raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
    if me.bot and peer.bot:
        raise RpcFailure(400, "USER_IS_BOT")


def _deliver(
    api: Api, ctx: CallContext, me: Account, peer: Account, sends: list[tuple[StoredFile, str, int]]
) -> types.Updates:
    """Store each (file, caption, random_id) as a message, push it to both sides, and
    answer the sender: the id for each random_id, and the messages themselves."""
    sent: list[tuple[StoredMessage, int]] = []
    for stored, caption, random_id in sends:
        out, incoming = api.world.deliver(me, peer, caption, random_id, media_id=stored.id)
        api._server._push_new_message(me, peer, out, incoming, skip_session=ctx.session_id)
        sent.append((out, random_id))
    api._server._on_world_changed()
    updates: list[Any] = [types.UpdateMessageID(id=o.id, random_id=r) for o, r in sent]
    updates += [
        types.UpdateNewMessage(message=api.tl_message(o), pts=o.pts, pts_count=1) for o, _ in sent
    ]
    return types.Updates(
        updates=updates,
        users=[api.tl_user(peer, me), api.tl_user(me, me)],
        chats=[],
        date=_date(sent[-1][0].date),
        seq=0,
    )


@_method(functions.messages.SendMediaRequest)
def _send_media(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    me = api.me(ctx)
    peer = api.resolve_peer(request.peer, me)
    caption = request.message or ""
    _check_send(me, peer, caption, request.random_id)
    stored = _media_file(api, request.media, ctx)
    return _deliver(api, ctx, me, peer, [(stored, caption, request.random_id)])


@_method(functions.messages.SendMultiMediaRequest)
def _send_multi_media(api: Api, request: Any, ctx: CallContext) -> types.Updates:
    """An album: one message per item (``grouped_id`` is not modelled)."""
    me = api.me(ctx)
    peer = api.resolve_peer(request.peer, me)
    if not request.multi_media:
        raise RpcFailure(400, "MEDIA_EMPTY")
    if len(request.multi_media) > ALBUM_MAX:
        raise RpcFailure(400, "MULTI_MEDIA_TOO_LONG")
    sends: list[tuple[StoredFile, str, int]] = []
    for single in request.multi_media:
        caption = single.message or ""
        _check_send(me, peer, caption, single.random_id)
        if any(single.random_id == r for _, _, r in sends):
            raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
        sends.append(
            (_media_file(api, single.media, ctx, uploaded=False), caption, single.random_id)
        )
    return _deliver(api, ctx, me, peer, sends)


@_method(functions.messages.UploadMediaRequest)
def _upload_media(api: Api, request: Any, ctx: CallContext) -> Any:
    """Store an upload without sending it (Telethon does this for albums)."""
    me = api.me(ctx)
    api.resolve_peer(request.peer, me)
    stored = _media_file(api, request.media, ctx)
    api._server._on_world_changed()
    return tl_media(stored)
