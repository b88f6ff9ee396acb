"""A small raw MTProto 2.0 client for tests: frames over a real socket, no Telethon client.

It speaks what independent clients (GramJS, mtcute, Kurigram, TDLib) speak and Telethon
does not: req_DH_params in the spec's RSA_PAD form, p_q_inner_data_dc, padded
intermediate with 0-15 padding bytes, pings with either seqno parity, several session
ids on one key. Written from https://core.telegram.org/mtproto/auth_key and
/mtproto/mtproto-transports; it borrows Telethon's TL classes for (de)serialising and
the server's proven MTProto 2.0 message key derivation, but RSA_PAD, the handshake
steps, the first salt and the transport framing are written here, from the spec.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from telethon.extensions import BinaryReader
from telethon.tl import TLObject, functions, types
from telethon.tl.core import RpcResult

from resilient_tg.testing import _crypto as c

STEP = 20.0

INTERMEDIATE = b"\xee\xee\xee\xee"
PADDED = b"\xdd\xdd\xdd\xdd"


class TransportErrorCode(Exception):
    """The server sent a 4-byte transport error (e.g. -404)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"transport error {code}")
        self.code = code


@attrs.frozen
class Message:
    """One decrypted message from the server."""

    session_id: int
    msg_id: int
    seqno: int
    salt: int
    body: bytes

    def obj(self) -> Any:
        """The TL object (rpc_result comes as Telethon's RpcResult, body left raw)."""
        return BinaryReader(self.body).tgread_object()


# Transport framing ------------------------------------------------------------------


class RawLink:
    """One TCP link in intermediate or padded-intermediate mode."""

    def __init__(
        self, stream: SocketStream, *, padded: bool, padding: Callable[[], int] | None
    ) -> None:
        self.stream = stream
        self._buffered = BufferedByteReceiveStream(stream)
        self.padded = padded
        self._padding = padding or (lambda: secrets.randbelow(16))
        self._tag_sent = False
        # Padding sizes of the packets received (padded mode only).
        self.received_padding: list[int] = []

    @classmethod
    async def open(
        cls, host: str, port: int, *, padded: bool = False, padding: Callable[[], int] | None = None
    ) -> RawLink:
        return cls(await anyio.connect_tcp(host, port), padded=padded, padding=padding)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send_packet(self, payload: bytes) -> None:
        head = b""
        if not self._tag_sent:
            head, self._tag_sent = (PADDED if self.padded else INTERMEDIATE), True
        if self.padded:
            payload += os.urandom(self._padding())
        await self.stream.send(head + struct.pack("<i", len(payload)) + payload)

    async def read_packet(self) -> bytes:
        (length,) = struct.unpack("<i", await self._buffered.receive_exactly(4))
        packet = await self._buffered.receive_exactly(length)
        if self.padded:
            real = _unpadded_length(packet)
            self.received_padding.append(len(packet) - real)
            packet = packet[:real]
        if len(packet) == 4:
            raise TransportErrorCode(struct.unpack("<i", packet)[0])
        return packet


def _unpadded_length(packet: bytes) -> int:
    """The spec's rule: a plain packet is 20 + message_data_length bytes, an encrypted
    one 24 + a whole number of 16-byte blocks; 4 bytes are a transport error."""
    if len(packet) < 24:
        return 4 if len(packet) < 20 else len(packet)
    if packet[:8] == bytes(8):
        return 20 + struct.unpack("<i", packet[16:20])[0]
    return 24 + (len(packet) - 24) // 16 * 16


# Auth key exchange ------------------------------------------------------------------


def rsa_pad(data: bytes, n: int, e: int) -> bytes:
    """RSA_PAD(data, server_public_key), step by step as /mtproto/auth_key gives it."""
    assert len(data) <= 144
    data_with_padding = data + os.urandom(192 - len(data))
    data_pad_reversed = data_with_padding[::-1]
    while True:
        temp_key = os.urandom(32)
        data_with_hash = data_pad_reversed + c.sha256(temp_key + data_with_padding)
        aes_encrypted = c.ige_encrypt(data_with_hash, temp_key, bytes(32))
        temp_key_xor = bytes(a ^ b for a, b in zip(temp_key, c.sha256(aes_encrypted), strict=True))
        key_aes_encrypted = temp_key_xor + aes_encrypted
        value = int.from_bytes(key_aes_encrypted, "big")
        if value < n:
            return pow(value, e, n).to_bytes(256, "big")


def rsa_sha1(data: bytes, n: int, e: int) -> bytes:
    """The older form Telethon sends: sha1(data) + data + random padding, 255 bytes."""
    block = c.sha1(data) + data
    block += os.urandom(255 - len(block))
    return pow(int.from_bytes(block, "big"), e, n).to_bytes(256, "big")


def factor(pq: int) -> tuple[int, int]:
    """Pollard's rho (Brent): pq is the product of two ~31-bit primes."""
    if pq % 2 == 0:
        return 2, pq // 2
    while True:
        y, cst, m = secrets.randbelow(pq - 1) + 1, secrets.randbelow(pq - 1) + 1, 128
        g = r = q = 1
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + cst) % pq
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + cst) % pq
                    q = q * abs(x - y) % pq
                g = math.gcd(q, pq)
                k += m
            r *= 2
        if g == pq:
            while True:
                ys = (ys * ys + cst) % pq
                g = math.gcd(abs(x - ys), pq)
                if g > 1:
                    break
        if g != pq:
            p = min(g, pq // g)
            return p, pq // p


def big_endian(value: int) -> bytes:
    """A natural number as MTProto writes pq, p, q, g_b: big-endian, no leading zeros."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@attrs.frozen
class NewKey:
    key: bytes
    # substr(new_nonce, 0, 8) XOR substr(server_nonce, 0, 8): the first salt.
    salt: int


async def create_auth_key(
    link: RawLink,
    public_pem: str,
    *,
    form: str = "rsa_pad",
    inner: str = "p_q_inner_data_dc",
    dc: int = 2,
) -> NewKey:
    """Run the DH exchange. ``form``: "rsa_pad" or "sha1"; ``inner``: "p_q_inner_data",
    "p_q_inner_data_dc" or "p_q_inner_data_temp_dc"."""
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    n, e = public.public_numbers().n, public.public_numbers().e
    nonce = _rand_int(16)
    res_pq = await plain_call(link, functions.ReqPqMultiRequest(nonce=nonce))
    assert isinstance(res_pq, types.ResPQ)
    assert res_pq.nonce == nonce
    pq = int.from_bytes(res_pq.pq, "big")
    p, q = factor(pq)
    new_nonce = _rand_int(32)
    common = {
        "pq": res_pq.pq,
        "p": big_endian(p),
        "q": big_endian(q),
        "nonce": nonce,
        "server_nonce": res_pq.server_nonce,
        "new_nonce": new_nonce,
    }
    data: TLObject
    if inner == "p_q_inner_data":
        data = types.PQInnerData(**common)
    elif inner == "p_q_inner_data_dc":
        data = types.PQInnerDataDc(**common, dc=dc)
    else:
        data = types.PQInnerDataTempDc(**common, dc=dc, expires_in=3600)
    encrypt = rsa_pad if form == "rsa_pad" else rsa_sha1
    fingerprint = res_pq.server_public_key_fingerprints[0]
    answer = await plain_call(
        link,
        functions.ReqDHParamsRequest(
            nonce=nonce,
            server_nonce=res_pq.server_nonce,
            p=big_endian(p),
            q=big_endian(q),
            public_key_fingerprint=fingerprint,
            encrypted_data=encrypt(bytes(data), n, e),
        ),
    )
    assert isinstance(answer, types.ServerDHParamsOk), answer
    new_nonce_b = new_nonce.to_bytes(32, "little", signed=True)
    server_nonce_b = res_pq.server_nonce.to_bytes(16, "little", signed=True)
    tmp_key, tmp_iv = c.tmp_aes_key_iv(new_nonce_b, server_nonce_b)
    plain = c.ige_decrypt(answer.encrypted_answer, tmp_key, tmp_iv)
    reader = BinaryReader(plain[20:])
    dh_inner = reader.tgread_object()
    assert c.sha1(plain[20 : 20 + reader.tell_position()]) == plain[:20]
    assert isinstance(dh_inner, types.ServerDHInnerData)
    dh_prime = int.from_bytes(dh_inner.dh_prime, "big")
    g_a = int.from_bytes(dh_inner.g_a, "big")
    b = int.from_bytes(os.urandom(256), "big")
    g_b = pow(dh_inner.g, b, dh_prime)
    client_inner = bytes(
        types.ClientDHInnerData(
            nonce=nonce, server_nonce=res_pq.server_nonce, retry_id=0, g_b=big_endian(g_b)
        )
    )
    block = c.sha1(client_inner) + client_inner
    block += os.urandom(-len(block) % 16)
    result = await plain_call(
        link,
        functions.SetClientDHParamsRequest(
            nonce=nonce,
            server_nonce=res_pq.server_nonce,
            encrypted_data=c.ige_encrypt(block, tmp_key, tmp_iv),
        ),
    )
    assert isinstance(result, types.DhGenOk), result
    auth_key = pow(g_a, b, dh_prime).to_bytes(256, "big")
    aux_hash = c.sha1(auth_key)[:8]
    expected = c.sha1(new_nonce_b + b"\x01" + aux_hash)[4:20]
    assert result.new_nonce_hash1.to_bytes(16, "little", signed=True) == expected
    (salt,) = struct.unpack(
        "<q", bytes(a ^ b for a, b in zip(new_nonce_b[:8], server_nonce_b[:8], strict=True))
    )
    return NewKey(key=auth_key, salt=salt)


async def plain_call(link: RawLink, request: TLObject) -> Any:
    """Send an unencrypted message and read the unencrypted answer."""
    body = bytes(request)
    msg_id = int(time.time() * 2**32) & ~3
    await link.send_packet(struct.pack("<qqi", 0, msg_id, len(body)) + body)
    packet = await link.read_packet()
    (length,) = struct.unpack("<i", packet[16:20])
    return BinaryReader(packet[20 : 20 + length]).tgread_object()


def _rand_int(size: int) -> int:
    return int.from_bytes(os.urandom(size), "little", signed=True)


# Encrypted messages -------------------------------------------------------------------


class Session:
    """Encrypted messages on one link, under any number of session ids of one key."""

    def __init__(self, link: RawLink, key: bytes, salt: int, session_id: int | None = None) -> None:
        self.link = link
        self.key = key
        self.key_id = c.auth_key_id(key)
        self.salt = salt
        self.session_id = session_id if session_id is not None else _rand_int(8)
        self._seq: dict[int, int] = {}
        self._last_msg_id = 0
        # Messages read while waiting for something else, oldest first.
        self.backlog: list[Message] = []

    def new_msg_id(self) -> int:
        msg_id = int(time.time() * 2**32) & ~3
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    async def send(
        self, body: bytes, *, content_related: bool = True, session_id: int | None = None
    ) -> int:
        """Encrypt and send one message; returns its msg_id."""
        sid = self.session_id if session_id is None else session_id
        seq = self._seq.get(sid, 0)
        if content_related:
            seqno = seq * 2 + 1
            self._seq[sid] = seq + 1
        else:
            seqno = seq * 2
        msg_id = self.new_msg_id()
        plain = struct.pack("<qqqii", self.salt, sid, msg_id, seqno, len(body)) + body
        plain += os.urandom(12 + (-(len(plain) + 12) % 16))
        msg_key = c.msg_key_for(self.key, plain, from_client=True)
        aes_key, aes_iv = c.message_key_iv(self.key, msg_key, from_client=True)
        await self.link.send_packet(self.key_id + msg_key + c.ige_encrypt(plain, aes_key, aes_iv))
        return msg_id

    async def receive(self) -> Message:
        packet = await self.link.read_packet()
        assert packet[:8] == self.key_id, "a message under another auth key"
        msg_key = packet[8:24]
        aes_key, aes_iv = c.message_key_iv(self.key, msg_key, from_client=False)
        plain = c.ige_decrypt(packet[24:], aes_key, aes_iv)
        assert c.msg_key_for(self.key, plain, from_client=False) == msg_key
        salt, session_id, msg_id, seqno, length = struct.unpack("<qqqii", plain[:32])
        assert msg_id % 2 == 1
        return Message(session_id, msg_id, seqno, salt, plain[32 : 32 + length])

    async def answer_to(self, msg_id: int) -> Message:
        """Read until the message that answers ``msg_id`` (others go to ``backlog``)."""
        while True:
            message = await self.receive()
            if _answers(message, msg_id):
                return message
            self.backlog.append(message)

    async def call(
        self, request: TLObject | bytes, *, content_related: bool = True
    ) -> tuple[Message, Any]:
        """Send a request and return its answer, resending once after bad_server_salt."""
        body = request if isinstance(request, bytes) else bytes(request)
        with anyio.fail_after(STEP):
            for _ in range(2):
                msg_id = await self.send(body, content_related=content_related)
                message = await self.answer_to(msg_id)
                obj = message.obj()
                if isinstance(obj, types.BadServerSalt):
                    self.salt = obj.new_server_salt
                    continue
                return message, obj
        raise AssertionError("bad_server_salt twice")


def _answers(message: Message, msg_id: int) -> bool:
    obj = message.obj()
    if isinstance(obj, RpcResult):
        return bool(obj.req_msg_id == msg_id)
    if isinstance(obj, types.Pong | types.MsgsStateInfo):
        return bool(getattr(obj, "msg_id", getattr(obj, "req_msg_id", None)) == msg_id)
    if isinstance(obj, types.BadServerSalt | types.BadMsgNotification):
        return bool(obj.bad_msg_id == msg_id)
    return False


def rpc_result_obj(result: RpcResult) -> Any:
    """The object inside an rpc_result (an RpcError for errors)."""
    if result.error is not None:
        return result.error
    return BinaryReader(result.body).tgread_object()
