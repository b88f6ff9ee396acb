"""Files on MTProtoTestServer: uploads, sendMedia and getFile with real Telethon."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from telethon import TelegramClient, errors
from telethon.tl import functions, types

from resilient_tg.testing import MTProtoTestServer, TestUser

from .conftest import STEP_TIMEOUT, login, telethon_client

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def fresh_telethon_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telethon caches help.getConfig (the DC addresses) on the TelegramClient class for
    the whole process; each test's server has new ports, so start without the cache."""
    monkeypatch.setattr(TelegramClient, "_config", None)


# A 10 MB round trip costs seconds of AES on both sides; generous on a loaded 2-core box.
BIG_TIMEOUT = 120.0


def png(width: int, height: int) -> bytes:
    """A real RGB PNG (Telethon leaves such a photo as it is, without resizing)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    rows = b"".join(b"\x00" + os.urandom(3 * width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


async def two_users(server: MTProtoTestServer) -> tuple[TestUser, TestUser]:
    alice = server.create_user("+15550101", "Alice", username="alice_files")
    bob = server.create_user("+15550102", "Bob", username="bob_files")
    return alice, bob


async def last_message(client: TelegramClient, username: str) -> types.Message:
    messages = await asyncio.wait_for(client.get_messages(username, limit=1), STEP_TIMEOUT)
    assert len(messages) == 1
    message: types.Message = messages[0]
    return message


async def test_document_round_trip_gives_the_recipient_identical_bytes(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = os.urandom(300_000)  # three parts of 128 KB, the last one short
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        sent = await asyncio.wait_for(
            a.send_file("bob_files", named(data, "report.bin"), caption="the report"),
            STEP_TIMEOUT,
        )
        assert isinstance(sent.media, types.MessageMediaDocument)
        assert sent.media.document.size == len(data)
        assert sent.media.document.dc_id == mtproto_server.dc_id
        assert sent.message == "the report"

        received = await last_message(b, "alice_files")
        assert received.file.name == "report.bin"
        assert received.message == "the report"
        downloaded = await asyncio.wait_for(b.download_media(received, file=bytes), STEP_TIMEOUT)
        assert downloaded == data
    saved = [r.method for r in mtproto_server.requests_for("upload.saveFilePart")]
    assert len(saved) == 3
    info = mtproto_server.message_file(bob.id, received.id)
    assert (info.kind, info.name, info.size) == ("document", "report.bin", len(data))
    assert mtproto_server.file_bytes(info.id) == data


async def test_photo_round_trip_gives_the_recipient_identical_bytes(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = png(40, 30)
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        sent = await asyncio.wait_for(
            a.send_file("bob_files", named(data, "pic.png")), STEP_TIMEOUT
        )
        assert isinstance(sent.media, types.MessageMediaPhoto)

        received = await last_message(b, "alice_files")
        assert isinstance(received.media, types.MessageMediaPhoto)
        (size,) = received.media.photo.sizes
        assert (size.w, size.h, size.size) == (40, 30, len(data))
        downloaded = await asyncio.wait_for(b.download_media(received, file=bytes), STEP_TIMEOUT)
        assert downloaded == data


async def test_recipient_online_gets_the_file_in_a_new_message_update(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = b"hello file" * 100
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        got: asyncio.Future[types.Message] = asyncio.get_running_loop().create_future()

        async def on_new(update: object) -> None:
            if isinstance(update, types.UpdateNewMessage) and not got.done():
                got.set_result(update.message)

        b.add_event_handler(on_new)
        await a.send_file("bob_files", named(data, "hello.txt"))
        message = await asyncio.wait_for(got, STEP_TIMEOUT)
        assert isinstance(message.media, types.MessageMediaDocument)
        assert await b.download_media(message, file=bytes) == data


async def test_get_difference_carries_the_file_to_a_recipient_who_was_away(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = os.urandom(2048)
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        state = await b(functions.updates.GetStateRequest())
    await mtproto_server.send_file(alice.id, bob.id, data, name="while_away.bin")
    async with telethon_client(mtproto_server, session=None) as b2:
        await login(b2, mtproto_server, bob)
        difference = await b2(
            functions.updates.GetDifferenceRequest(pts=state.pts, date=state.date, qts=0)
        )
        assert isinstance(difference, types.updates.Difference)
        (message,) = difference.new_messages
        assert isinstance(message.media, types.MessageMediaDocument)
        assert message.media.document.attributes[0].file_name == "while_away.bin"
        assert await b2.download_media(message, file=bytes) == data


async def test_album_of_photos_arrives_as_one_message_each(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    photos = [png(10, 10), png(20, 12)]
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        sent = await a.send_file(
            "bob_files", [named(p, f"p{i}.png") for i, p in enumerate(photos)], caption=["1", "2"]
        )
        assert [m.message for m in sent] == ["1", "2"]
        assert len(mtproto_server.requests_for("messages.uploadMedia")) == 2
        received = await asyncio.wait_for(b.get_messages("alice_files", limit=2), STEP_TIMEOUT)
        got = [await b.download_media(m, file=bytes) for m in reversed(received)]
        assert got == photos


async def test_resending_an_existing_document_points_at_the_same_file(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = os.urandom(5000)
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        first = await a.send_file("bob_files", named(data, "a.bin"))
        uploads = len(mtproto_server.requests_for("upload.saveFilePart"))
        again = await a.send_file("bob_files", first.media.document)
        assert len(mtproto_server.requests_for("upload.saveFilePart")) == uploads
        assert again.media.document.id == first.media.document.id
        received = await last_message(b, "alice_files")
        assert await b.download_media(received, file=bytes) == data


async def test_control_send_file_is_downloadable_and_readable_back(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    data = os.urandom(70_000)
    message_id = await mtproto_server.send_file(alice.id, bob.id, data, name="injected.dat")
    info = mtproto_server.message_file(bob.id, message_id)
    assert info.dc_id == mtproto_server.dc_id
    assert mtproto_server.file_bytes(info.id) == data
    async with telethon_client(mtproto_server) as b:
        await login(b, mtproto_server, bob)
        received = await last_message(b, "alice_files")
        assert received.id == message_id
        assert received.file.name == "injected.dat"
        assert await b.download_media(received, file=bytes) == data


async def test_files_survive_a_restart_with_data_dir_in_private_files(tmp_path: Path) -> None:
    data = os.urandom(20_000)
    async with MTProtoTestServer(tmp_path) as server:
        alice, bob = await two_users(server)
        message_id = await server.send_file(alice.id, bob.id, data, name="kept.bin")
        file_id = server.message_file(bob.id, message_id).id
        await server.restart()
        assert server.file_bytes(file_id) == data
        blobs = list((tmp_path / "files").iterdir())
        assert [p.name for p in blobs] == [f"{file_id:016x}.bin"]
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in blobs)
        assert (tmp_path / "files").stat().st_mode & 0o777 == 0o700
        async with telethon_client(server) as b:
            await login(b, server, bob)
            received = await last_message(b, "alice_files")
            assert await b.download_media(received, file=bytes) == data


# Raw requests: Telegram's rules ------------------------------------------------------


async def _uploaded_document(client: TelegramClient, data: bytes) -> types.Document:
    sent = await client.send_file("bob_files", named(data, "raw.bin"))
    document: types.Document = sent.media.document
    return document


def _location(document: types.Document) -> types.InputDocumentFileLocation:
    return types.InputDocumentFileLocation(
        id=document.id,
        access_hash=document.access_hash,
        file_reference=document.file_reference,
        thumb_size="",
    )


@pytest.mark.parametrize(
    ("offset", "limit", "precise", "error"),
    [
        (1024, 4096, False, errors.OffsetInvalidError),  # offset not a multiple of 4 KB
        (-4096, 4096, False, errors.OffsetInvalidError),
        (0, 1024, False, errors.LimitInvalidError),  # limit not a multiple of 4 KB
        (0, 12288, False, errors.LimitInvalidError),  # 1 MB not divisible by the limit
        (0, 0, False, errors.LimitInvalidError),
        (0, 2 * 1024 * 1024, False, errors.LimitInvalidError),  # more than 1 MB
        (1024 * 1024 - 4096, 8192, False, errors.LimitInvalidError),  # crosses 1 MB
        (512, 1024, True, errors.OffsetInvalidError),  # precise: 1 KB alignment
        (0, 1000, True, errors.LimitInvalidError),
        (1024 * 1024 - 1024, 2048, True, errors.LimitInvalidError),  # crosses 1 MB
    ],
)
async def test_get_file_answers_offset_and_limit_errors_like_telegram(
    mtproto_server: MTProtoTestServer,
    offset: int,
    limit: int,
    precise: bool,
    error: type[Exception],
) -> None:
    alice, _ = await two_users(mtproto_server)
    async with telethon_client(mtproto_server) as a:
        await login(a, mtproto_server, alice)
        document = await _uploaded_document(a, os.urandom(10_000))
        with pytest.raises(error):
            await a(
                functions.upload.GetFileRequest(
                    _location(document), offset=offset, limit=limit, precise=precise or None
                )
            )


async def test_get_file_serves_aligned_chunks_and_empty_past_the_end(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, _ = await two_users(mtproto_server)
    data = os.urandom(10_000)
    async with telethon_client(mtproto_server) as a:
        await login(a, mtproto_server, alice)
        location = _location(await _uploaded_document(a, data))
        first = await a(functions.upload.GetFileRequest(location, offset=0, limit=4096))
        tail = await a(functions.upload.GetFileRequest(location, offset=8192, limit=4096))
        precise = await a(
            functions.upload.GetFileRequest(location, offset=1024, limit=3072, precise=True)
        )
        past = await a(functions.upload.GetFileRequest(location, offset=12288, limit=4096))
        assert first.bytes == data[:4096]
        assert tail.bytes == data[8192:]
        assert precise.bytes == data[1024:4096]
        assert past.bytes == b""
        wrong = types.InputDocumentFileLocation(
            id=location.id, access_hash=location.access_hash + 1, file_reference=b"", thumb_size=""
        )
        with pytest.raises(errors.FileIdInvalidError):
            await a(functions.upload.GetFileRequest(wrong, offset=0, limit=4096))


async def test_upload_part_rules_answer_telegram_errors(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice, bob = await two_users(mtproto_server)
    async with telethon_client(mtproto_server) as a:
        await login(a, mtproto_server, alice)
        peer = await a.get_input_entity("bob_files")

        async def send(input_file: types.TypeInputFile) -> None:
            await a(
                functions.messages.SendMediaRequest(
                    peer,
                    types.InputMediaUploadedDocument(
                        file=input_file, mime_type="application/octet-stream", attributes=[]
                    ),
                    message="",
                )
            )

        with pytest.raises(errors.FilePartTooBigError):
            await a(functions.upload.SaveFilePartRequest(1, 0, b"x" * (512 * 1024 + 1024)))
        with pytest.raises(errors.FilePartEmptyError):
            await a(functions.upload.SaveFilePartRequest(1, 0, b""))
        with pytest.raises(errors.FilePartInvalidError):
            await a(functions.upload.SaveFilePartRequest(1, 4000, b"x"))
        with pytest.raises(errors.FilePartsInvalidError):
            await a(functions.upload.SaveBigFilePartRequest(2, 0, 0, b"x" * 1024))

        # Part 1 never came: FILE_PART_1_MISSING.
        assert await a(functions.upload.SaveFilePartRequest(3, 0, b"a" * 4096))
        assert await a(functions.upload.SaveFilePartRequest(3, 2, b"c" * 100))
        with pytest.raises(errors.FilePartMissingError) as missing:
            await send(types.InputFile(3, 3, "x.bin", ""))
        assert missing.value.which == 1

        # A first part of 3000 bytes is not a valid part size for a 2-part file.
        assert await a(functions.upload.SaveFilePartRequest(4, 0, b"a" * 3000))
        assert await a(functions.upload.SaveFilePartRequest(4, 1, b"b" * 10))
        with pytest.raises(errors.FilePartSizeInvalidError):
            await send(types.InputFile(4, 2, "x.bin", ""))

        # Parts of one file have one size (the last may be smaller).
        assert await a(functions.upload.SaveFilePartRequest(5, 0, b"a" * 4096))
        assert await a(functions.upload.SaveFilePartRequest(5, 1, b"b" * 8192))
        with pytest.raises(errors.FilePartSizeChangedError):
            await send(types.InputFile(5, 2, "x.bin", ""))

        # The md5 is checked; a big upload is not a small file.
        assert await a(functions.upload.SaveFilePartRequest(6, 0, b"a" * 10))
        with pytest.raises(errors.Md5ChecksumInvalidError):
            await send(types.InputFile(6, 1, "x.bin", hashlib.md5(b"other").hexdigest()))
        assert await a(functions.upload.SaveBigFilePartRequest(7, 0, 1, b"a" * 10))
        with pytest.raises(errors.FilePartsInvalidError):
            await send(types.InputFile(7, 1, "x.bin", ""))
        with pytest.raises(errors.FilePartsInvalidError):
            await send(types.InputFileBig(7, 2, "x.bin"))
        await send(types.InputFileBig(7, 1, "x.bin"))
    assert mtproto_server.message_file(bob.id, 1).size == 10


async def test_storage_cap_refuses_uploads_beyond_it(mtproto_server: MTProtoTestServer) -> None:
    alice, _ = await two_users(mtproto_server)
    mtproto_server.file_bytes_limit = 64 * 1024
    async with telethon_client(mtproto_server) as a:
        await login(a, mtproto_server, alice)
        assert await a(functions.upload.SaveFilePartRequest(1, 0, b"a" * 32768))
        assert await a(functions.upload.SaveFilePartRequest(1, 1, b"a" * 32768))
        with pytest.raises(errors.RPCError, match="TEST_SERVER_STORAGE_FULL"):
            await a(functions.upload.SaveFilePartRequest(1, 2, b"a" * 1024))
    with pytest.raises(ValueError, match="TEST_SERVER_STORAGE_FULL"):
        await mtproto_server.send_file(alice.id, alice.id, b"x")


@pytest.mark.slow
async def test_big_file_goes_up_in_big_parts_and_comes_back_identical(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Over 10 MB Telethon switches to saveBigFilePart; the bytes survive both ways."""
    alice, bob = await two_users(mtproto_server)
    data = os.urandom(10 * 1024 * 1024 + 4096)
    async with telethon_client(mtproto_server) as a, telethon_client(mtproto_server) as b:
        await login(a, mtproto_server, alice)
        await login(b, mtproto_server, bob)
        await asyncio.wait_for(a.send_file("bob_files", named(data, "big.bin")), BIG_TIMEOUT)
        big_parts = mtproto_server.requests_for("upload.saveBigFilePart")
        assert len(big_parts) == 81  # 80 parts of 128 KB and a short last one
        assert not mtproto_server.requests_for("upload.saveFilePart")
        received = await last_message(b, "alice_files")
        downloaded = await asyncio.wait_for(b.download_media(received, file=bytes), BIG_TIMEOUT)
        assert downloaded == data


# Several DCs ---------------------------------------------------------------------------


async def test_file_on_another_dc_answers_file_migrate_on_the_home_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice, bob = await two_users(server)
        data = os.urandom(9000)
        message_id = await server.send_file(alice.id, bob.id, data, dc_id=4)
        assert server.message_file(bob.id, message_id).dc_id == 4
        async with telethon_client(server) as b:
            await login(b, server, bob)
            received = await last_message(b, "alice_files")
            assert received.media.document.dc_id == 4
            request = functions.upload.GetFileRequest(
                _location(received.media.document), offset=0, limit=4096
            )
            with pytest.raises(errors.FileMigrateError) as migrate:
                await b(request)
            assert migrate.value.new_dc == 4
            # Without the DC Telethon asks its own DC first and follows the migrate answer.
            fetched = await asyncio.wait_for(
                b.download_file(_location(received.media.document), bytes), STEP_TIMEOUT
            )
            assert fetched == data


async def test_account_on_dc_2_downloads_a_file_stored_on_dc_4_through_an_exported_sender() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550101", "Alice", username="alice_files", dc_id=4)
        bob = server.create_user("+15550102", "Bob", username="bob_files", dc_id=2)
        data = os.urandom(400_000)
        async with (
            telethon_client(server, session=server.telethon_session_for(4)) as a,
            telethon_client(server, session=server.telethon_session_for(2)) as b,
        ):
            await login(a, server, alice)
            await login(b, server, bob)
            sent = await asyncio.wait_for(
                a.send_file("bob_files", named(data, "far.bin")), STEP_TIMEOUT
            )
            assert sent.media.document.dc_id == 4  # the uploader's DC
            received = await last_message(b, "alice_files")
            assert received.media.document.dc_id == 4
            downloaded = await asyncio.wait_for(
                b.download_media(received, file=bytes), STEP_TIMEOUT
            )
            assert downloaded == data
        imports = server.requests_for("auth.importAuthorization")
        assert [r.dc_id for r in imports] == [4]
        # Telethon 1.45 asks its own DC first; FILE_MIGRATE_4 sends it to DC 4.
        get_files = server.requests_for("upload.getFile")
        assert [r.dc_id for r in get_files] == [2] + [4] * (len(get_files) - 1)
        assert len(get_files) == 1 + 4  # 400 KB in 128 KB chunks
        assert {r.user_id for r in get_files} == {bob.id}
