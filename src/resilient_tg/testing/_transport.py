"""MTProto TCP transports, server side: full, intermediate, padded intermediate,
abridged, and the obfuscated wrapping of the last three.

https://core.telegram.org/mtproto/mtproto-transports. The mode is told apart from
the first bytes a client sends, as Telegram does.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Protocol

from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ._crypto import CtrStream

# Packets bigger than this are refused; Telegram's own limit is about 1 MB of payload.
MAX_PACKET = 2 * 1024 * 1024

ABRIDGED_TAG = b"\xef"
INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
PADDED_TAG = b"\xdd\xdd\xdd\xdd"
# First words a real client never starts an obfuscated header with (they name other protocols).
_NOT_OBFUSCATED = (b"PVrG", b"GET ", b"POST", b"HEAD", b"\x16\x03\x01\x02")


class TransportError(Exception):
    """The peer broke the framing; the link is closed."""


class _Reader(Protocol):
    async def read(self, n: int) -> bytes: ...


class _PlainReader:
    def __init__(self, stream: BufferedByteReceiveStream) -> None:
        self._stream = stream

    async def read(self, n: int) -> bytes:
        return await self._stream.receive_exactly(n)


class _ObfuscatedReader:
    def __init__(self, stream: BufferedByteReceiveStream, ctr: CtrStream) -> None:
        self._stream = stream
        self._ctr = ctr

    async def read(self, n: int) -> bytes:
        return self._ctr.apply(await self._stream.receive_exactly(n))


class Framing:
    """Reads and writes whole MTProto packets over one accepted link."""

    name = "?"

    def __init__(self, stream: ByteStream, reader: _Reader, out: CtrStream | None) -> None:
        self._stream = stream
        self._reader = reader
        self._out = out

    async def read_packet(self) -> bytes:
        raise NotImplementedError

    def encode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    async def send(self, payload: bytes) -> None:
        data = self.encode(payload)
        if self._out is not None:
            data = self._out.apply(data)
        await self._stream.send(data)

    async def send_transport_error(self, code: int) -> None:
        """A 4-byte packet holding a negative code, e.g. -404 for an unknown auth key."""
        await self.send(struct.pack("<i", code))

    @staticmethod
    def _check_length(length: int) -> None:
        if length <= 0 or length > MAX_PACKET:
            raise TransportError(f"packet length {length} out of range")


class FullFraming(Framing):
    """``len | seq | payload | crc32``; both sides count their packets from 0."""

    name = "full"

    def __init__(
        self, stream: ByteStream, reader: _Reader, out: CtrStream | None, first8: bytes
    ) -> None:
        super().__init__(stream, reader, out)
        self._first8: bytes | None = first8
        self._recv_seq = 0
        self._send_seq = 0

    async def read_packet(self) -> bytes:
        if self._first8 is not None:
            head, self._first8 = self._first8, None
        else:
            head = await self._reader.read(8)
        length, seq = struct.unpack("<ii", head)
        if length < 12 or length > MAX_PACKET:
            raise TransportError(f"full transport length {length} out of range")
        rest = await self._reader.read(length - 8)
        body, crc = rest[:-4], struct.unpack("<I", rest[-4:])[0]
        if zlib.crc32(head + body) != crc:
            raise TransportError("full transport crc32 mismatch")
        if seq != self._recv_seq:
            raise TransportError(f"full transport seq {seq}, expected {self._recv_seq}")
        self._recv_seq += 1
        return body

    async def send_transport_error(self, code: int) -> None:
        """Unframed, as Telegram was seen sending a flood (-429) on this transport: the
        code in the length, the seq and the body (Telethon's tcpfull.py reads it so)."""
        data = struct.pack("<iii", code, code, code)
        if self._out is not None:
            data = self._out.apply(data)
        await self._stream.send(data)

    def encode(self, payload: bytes) -> bytes:
        data = struct.pack("<ii", len(payload) + 12, self._send_seq) + payload
        self._send_seq += 1
        return data + struct.pack("<I", zlib.crc32(data))


class IntermediateFraming(Framing):
    """``len | payload`` with a 4-byte little-endian length."""

    name = "intermediate"

    async def read_packet(self) -> bytes:
        (length,) = struct.unpack("<i", await self._reader.read(4))
        length &= 0x7FFFFFFF  # the top bit asks for a quick ack, which we don't send
        self._check_length(length)
        return await self._reader.read(length)

    def encode(self, payload: bytes) -> bytes:
        return struct.pack("<i", len(payload)) + payload


class PaddedIntermediateFraming(IntermediateFraming):
    """Intermediate with 0-15 random bytes after the payload (the spec's padded mode).

    The padding is not announced: an encrypted packet's real length is 8 + 16 + 16k,
    a plain one's is 20 + its message_data_length. Telethon strips only ``len % 4``
    (and its OpenSSL AES-IGE call aborts the process on a body that is not a whole
    number of blocks), so the server sends 0-3 bytes until the client itself has sent
    4 or more, which shows it strips by the rule above; then 0-15, as the spec allows.
    """

    name = "padded-intermediate"

    def __init__(self, stream: ByteStream, reader: _Reader, out: CtrStream | None) -> None:
        super().__init__(stream, reader, out)
        self._max_padding = 3

    async def read_packet(self) -> bytes:
        packet = await super().read_packet()
        real = real_length(packet)
        if not 0 <= len(packet) - real <= 15:
            raise TransportError(f"padded packet of {len(packet)} bytes holds {real} bytes")
        if len(packet) - real > 3:
            self._max_padding = 15
        return packet[:real]

    def encode(self, payload: bytes) -> bytes:
        if len(payload) < 8:  # a transport error code is read whole, never padded
            return super().encode(payload)
        return super().encode(payload + os.urandom(os.urandom(1)[0] % (self._max_padding + 1)))


def real_length(packet: bytes) -> int:
    """The length of the MTProto packet at the start of ``packet`` (padding follows it).

    Plain: auth_key_id 0, msg_id, message_data_length, data. Encrypted: auth_key_id,
    msg_key, then whole 16-byte AES blocks. A packet too short to tell is kept whole.
    """
    if len(packet) < 20:
        return len(packet)
    if packet[:8] == bytes(8):
        (length,) = struct.unpack("<i", packet[16:20])
        return 20 + length if 0 <= length <= len(packet) - 20 else len(packet)
    return 24 + (len(packet) - 24) // 16 * 16


class AbridgedFraming(Framing):
    """A one-byte length in words (or 0x7f and three bytes), then the payload."""

    name = "abridged"

    async def read_packet(self) -> bytes:
        first = (await self._reader.read(1))[0] & 0x7F  # top bit: quick-ack request
        words = first if first < 0x7F else int.from_bytes(await self._reader.read(3), "little")
        self._check_length(words * 4)
        return await self._reader.read(words * 4)

    def encode(self, payload: bytes) -> bytes:
        words = len(payload) // 4
        if words < 0x7F:
            return bytes([words]) + payload
        return b"\x7f" + words.to_bytes(3, "little") + payload


_BY_TAG: dict[bytes, type[Framing]] = {
    b"\xef\xef\xef\xef": AbridgedFraming,
    INTERMEDIATE_TAG: IntermediateFraming,
    PADDED_TAG: PaddedIntermediateFraming,
}


async def open_framing(stream: ByteStream, buffered: BufferedByteReceiveStream) -> Framing:
    """Tell the client's transport mode from its first bytes and return its framing."""
    plain = _PlainReader(buffered)
    first = await plain.read(1)
    if first == ABRIDGED_TAG:
        return AbridgedFraming(stream, plain, None)
    head = first + await plain.read(3)
    if head == INTERMEDIATE_TAG:
        return IntermediateFraming(stream, plain, None)
    if head == PADDED_TAG:
        return PaddedIntermediateFraming(stream, plain, None)
    head += await plain.read(4)
    if head[4:8] == b"\0\0\0\0":
        # Full mode: the first packet's seq is 0. An obfuscated header never has zeros there.
        return FullFraming(stream, plain, None, head)
    if head[:4] in _NOT_OBFUSCATED:
        raise TransportError("not an MTProto transport (looks like another protocol)")
    header = head + await plain.read(56)
    dec = CtrStream(header[8:40], header[40:56])
    reversed_part = header[8:56][::-1]
    enc = CtrStream(reversed_part[:32], reversed_part[32:48])
    decrypted = dec.apply(header)
    framing_cls = _BY_TAG.get(decrypted[56:60])
    if framing_cls is None:
        raise TransportError("unknown obfuscated transport tag")
    framing = framing_cls(stream, _ObfuscatedReader(buffered, dec), enc)
    framing.name = "obfuscated-" + framing_cls.name
    return framing
