"""Creating a permanent auth key: req_pq_multi, req_DH_params, set_client_DH_params.

https://core.telegram.org/mtproto/auth_key. Pending exchanges are keyed by
server_nonce (as on Telegram they are not bound to one TCP link) and bounded, so a
flood of half-finished handshakes cannot exhaust memory.

req_DH_params is accepted in both RSA forms: the spec's RSA_PAD (GramJS, mtcute,
TDLib) and the older ``sha1(data) + data + padding`` (Telethon). Its inner data may
be ``p_q_inner_data`` or ``p_q_inner_data_dc``; the latter's ``dc`` must name the
listener's DC (test DCs may add 10000, media DCs are negative), so a client dialing
the wrong DC learns it at once. Temporary keys (``p_q_inner_data_temp*``, for PFS
with ``auth.bindTempAuthKey``) are refused: the server models permanent keys only.
The first server salt is ``substr(new_nonce, 0, 8) XOR substr(server_nonce, 0, 8)``.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
from collections import OrderedDict

import attrs
from telethon.extensions import BinaryReader
from telethon.tl import types
from telethon.tl.functions import (
    ReqDHParamsRequest,
    ReqPqMultiRequest,
    ReqPqRequest,
    SetClientDHParamsRequest,
)

from . import _crypto as c

log = logging.getLogger("resilient_tg.testing.handshake")

MAX_PENDING = 4096
PENDING_TTL = 120.0


class HandshakeError(Exception):
    """The client broke the exchange; the link is closed, as Telegram does."""


@attrs.define(eq=False)
class _Pending:
    nonce: int
    server_nonce: int
    p: int
    q: int
    started: float
    new_nonce: bytes = b""
    a: int = 0
    done: bool = False


@attrs.define(eq=False)
class NewKey:
    """A key the client and server now share (256 bytes, as Telegram pads it)."""

    key: bytes
    server_time: int
    # The first server salt, derived from the nonces as the spec says.
    salt: int


class Handshakes:
    """Server state for auth-key exchanges in progress."""

    def __init__(self, server_key: c.ServerKey) -> None:
        self._key = server_key
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        # Test hook: answer this many exchanges with a wrong new_nonce_hash1, which is what
        # Telethon sees when its key has a leading zero byte (it then starts over).
        self.corrupt_next = 0

    def handle(self, request: object, *, dc_id: int) -> tuple[object, NewKey | None]:
        """Answer one plain-text handshake request on DC ``dc_id``'s listener; the
        second item is set on dh_gen_ok."""
        if isinstance(request, (ReqPqMultiRequest, ReqPqRequest)):
            return self._req_pq(request.nonce), None
        if isinstance(request, ReqDHParamsRequest):
            return self._req_dh_params(request, dc_id), None
        if isinstance(request, SetClientDHParamsRequest):
            return self._set_client_dh_params(request)
        raise HandshakeError(f"unexpected plain message {type(request).__name__}")

    def _req_pq(self, nonce: int) -> types.ResPQ:
        self._expire()
        p, q = _prime31(), _prime31()
        while q == p:
            q = _prime31()
        p, q = min(p, q), max(p, q)
        server_nonce = int.from_bytes(os.urandom(16), "little", signed=True)
        self._pending[server_nonce] = _Pending(
            nonce=nonce, server_nonce=server_nonce, p=p, q=q, started=time.monotonic()
        )
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return types.ResPQ(
            nonce=nonce,
            server_nonce=server_nonce,
            pq=c.int_to_bytes(p * q),
            server_public_key_fingerprints=[self._key.fingerprint],
        )

    def _lookup(self, nonce: int, server_nonce: int) -> _Pending:
        pending = self._pending.get(server_nonce)
        if pending is None or pending.nonce != nonce:
            raise HandshakeError("unknown nonce pair")
        return pending

    def _inner_data(self, encrypted: bytes) -> object:
        """The TL object inside req_DH_params' encrypted_data, in either RSA form."""
        block = self._key.decrypt_raw(encrypted)
        if block is None:
            raise HandshakeError("undecryptable req_DH_params: not a 256-byte value below n")
        data = _rsa_pad_unwrap(block)
        form = "RSA_PAD"
        if data is None:
            data = _sha1_form_unwrap(block)
            form = "sha1"
        if data is None:
            raise HandshakeError(
                "undecryptable req_DH_params: neither the RSA_PAD sha256 nor the sha1 form checks"
            )
        try:
            return BinaryReader(data).tgread_object()
        except Exception as exc:
            raise HandshakeError(f"unreadable p_q_inner_data ({form} form)") from exc

    def _req_dh_params(self, req: ReqDHParamsRequest, dc_id: int) -> types.ServerDHParamsOk:
        pending = self._lookup(req.nonce, req.server_nonce)
        if pending.new_nonce:
            raise HandshakeError("req_DH_params repeated")
        if req.public_key_fingerprint != self._key.fingerprint:
            raise HandshakeError("unknown RSA key fingerprint")
        if req.p != c.int_to_bytes(pending.p) or req.q != c.int_to_bytes(pending.q):
            raise HandshakeError("wrong factorisation of pq")
        inner = self._inner_data(req.encrypted_data)
        if isinstance(inner, (types.PQInnerDataTemp, types.PQInnerDataTempDc)):
            log.warning(
                "refused a temporary auth key (%s): this test server creates permanent keys only",
                type(inner).__name__,
            )
            raise HandshakeError("temporary auth keys are not supported")
        if not isinstance(inner, (types.PQInnerData, types.PQInnerDataDc)):
            raise HandshakeError(f"unsupported inner data {type(inner).__name__}")
        if inner.nonce != pending.nonce or inner.server_nonce != pending.server_nonce:
            raise HandshakeError("nonce mismatch inside p_q_inner_data")
        if (inner.pq, inner.p, inner.q) != (
            c.int_to_bytes(pending.p * pending.q),
            c.int_to_bytes(pending.p),
            c.int_to_bytes(pending.q),
        ):
            raise HandshakeError("pq, p or q inside p_q_inner_data differ from the request")
        if isinstance(inner, types.PQInnerDataDc) and abs(inner.dc) not in (dc_id, dc_id + 10000):
            log.warning(
                "refused an auth key for dc %d on the listener of dc %d (wrong DC address?)",
                inner.dc,
                dc_id,
            )
            raise HandshakeError(f"p_q_inner_data_dc names dc {inner.dc}, this is dc {dc_id}")
        pending.new_nonce = c.nonce_bytes(inner.new_nonce, 32)
        while True:
            pending.a = secrets.randbits(c.DH_EXPONENT_BITS) | 1
            g_a = pow(c.DH_G, pending.a, c.DH_PRIME)
            if c.DH_SAFETY <= g_a <= c.DH_PRIME - c.DH_SAFETY:
                break
        answer = bytes(
            types.ServerDHInnerData(
                nonce=pending.nonce,
                server_nonce=pending.server_nonce,
                g=c.DH_G,
                dh_prime=c.int_to_bytes(c.DH_PRIME),
                g_a=c.int_to_bytes(g_a),
                server_time=int(time.time()),
            )
        )
        plain = c.sha1(answer) + answer
        plain += os.urandom(-len(plain) % 16)
        key, iv = c.tmp_aes_key_iv(pending.new_nonce, c.nonce_bytes(pending.server_nonce, 16))
        return types.ServerDHParamsOk(
            nonce=pending.nonce,
            server_nonce=pending.server_nonce,
            encrypted_answer=c.ige_encrypt(plain, key, iv),
        )

    def _set_client_dh_params(self, req: SetClientDHParamsRequest) -> tuple[types.DhGenOk, NewKey]:
        pending = self._lookup(req.nonce, req.server_nonce)
        if not pending.new_nonce or pending.done:
            raise HandshakeError("set_client_DH_params out of order")
        data = req.encrypted_data
        if not data or len(data) % 16:
            raise HandshakeError("set_client_DH_params not block aligned")
        key, iv = c.tmp_aes_key_iv(pending.new_nonce, c.nonce_bytes(pending.server_nonce, 16))
        plain = c.ige_decrypt(data, key, iv)
        try:
            reader = BinaryReader(plain[20:])
            inner = reader.tgread_object()
            length = reader.tell_position()
        except Exception as exc:
            raise HandshakeError("unreadable client_DH_inner_data") from exc
        if (
            not isinstance(inner, types.ClientDHInnerData)
            or c.sha1(plain[20 : 20 + length]) != (plain[:20])
        ):
            raise HandshakeError("client_DH_inner_data hash mismatch")
        if inner.nonce != pending.nonce or inner.server_nonce != pending.server_nonce:
            raise HandshakeError("nonce mismatch inside client_DH_inner_data")
        g_b = int.from_bytes(inner.g_b, "big")
        if not c.DH_SAFETY <= g_b <= c.DH_PRIME - c.DH_SAFETY:
            raise HandshakeError("g_b out of the safe range")
        auth_key = pow(g_b, pending.a, c.DH_PRIME).to_bytes(256, "big")
        pending.done = True
        self._pending.pop(pending.server_nonce, None)
        hash1 = c.new_nonce_hash(pending.new_nonce, 1, auth_key)
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            hash1 ^= 1
        answer = types.DhGenOk(
            nonce=pending.nonce, server_nonce=pending.server_nonce, new_nonce_hash1=hash1
        )
        server_nonce = c.nonce_bytes(pending.server_nonce, 16)
        (salt,) = struct.unpack("<q", c.xor(pending.new_nonce[:8], server_nonce[:8]))
        return answer, NewKey(key=auth_key, server_time=int(time.time()), salt=salt)

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.started >= cutoff:
                break
            self._pending.popitem(last=False)


def _rsa_pad_unwrap(block: bytes) -> bytes | None:
    """data_with_padding (192 bytes) from a decrypted RSA_PAD block, None if it fails.

    The spec's steps backwards: key_aes_encrypted = temp_key_xor (32) + aes_encrypted
    (224); temp_key = temp_key_xor XOR sha256(aes_encrypted); data_with_hash =
    AES-256-IGE-decrypt(aes_encrypted, temp_key, zero IV) = reversed(data_with_padding)
    + sha256(temp_key + data_with_padding).
    """
    temp_key_xor, aes_encrypted = block[:32], block[32:]
    temp_key = c.xor(temp_key_xor, c.sha256(aes_encrypted))
    data_with_hash = c.ige_decrypt(aes_encrypted, temp_key, bytes(32))
    data_with_padding = data_with_hash[:192][::-1]
    if c.sha256(temp_key + data_with_padding) != data_with_hash[192:]:
        return None
    return data_with_padding


def _sha1_form_unwrap(block: bytes) -> bytes | None:
    """The TL data from the old form: 0x00, sha1(data), data, random padding."""
    if block[0] != 0:
        return None
    digest, rest = block[1:21], block[21:]
    try:
        reader = BinaryReader(rest)
        reader.tgread_object()
        length = reader.tell_position()
    except Exception:  # noqa: BLE001 - not this form; the caller says why
        return None
    return rest[:length] if c.sha1(rest[:length]) == digest else None


def _prime31() -> int:
    """A random prime in [2^30, 2^31), so that pq fits the 8 bytes Telegram uses."""
    while True:
        candidate = secrets.randbits(30) | (1 << 30) | 1
        if _is_prime(candidate):
            return candidate


def _is_prime(n: int) -> bool:
    # Deterministic Miller-Rabin for n < 3.3e24 with these bases.
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True
