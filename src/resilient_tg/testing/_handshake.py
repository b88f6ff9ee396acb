"""Creating a permanent auth key: req_pq_multi, req_DH_params, set_client_DH_params.

https://core.telegram.org/mtproto/auth_key. Pending exchanges are keyed by
server_nonce (as on Telegram they are not bound to one TCP link) and bounded, so a
flood of half-finished handshakes cannot exhaust memory.
"""

from __future__ import annotations

import os
import secrets
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


class Handshakes:
    """Server state for auth-key exchanges in progress."""

    def __init__(self, server_key: c.ServerKey) -> None:
        self._key = server_key
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        # Test hook: answer this many exchanges with a wrong new_nonce_hash1, which is what
        # Telethon sees when its key has a leading zero byte (it then starts over).
        self.corrupt_next = 0

    def handle(self, request: object) -> tuple[object, NewKey | None]:
        """Answer one plain-text handshake request; the second item is set on dh_gen_ok."""
        if isinstance(request, (ReqPqMultiRequest, ReqPqRequest)):
            return self._req_pq(request.nonce), None
        if isinstance(request, ReqDHParamsRequest):
            return self._req_dh_params(request), None
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

    def _req_dh_params(self, req: ReqDHParamsRequest) -> types.ServerDHParamsOk:
        pending = self._lookup(req.nonce, req.server_nonce)
        if pending.new_nonce:
            raise HandshakeError("req_DH_params repeated")
        if req.public_key_fingerprint != self._key.fingerprint:
            raise HandshakeError("unknown RSA key fingerprint")
        if req.p != c.int_to_bytes(pending.p) or req.q != c.int_to_bytes(pending.q):
            raise HandshakeError("wrong factorisation of pq")
        block = self._key.decrypt_raw(req.encrypted_data)
        if block is None or block[0] != 0:
            raise HandshakeError("undecryptable req_DH_params")
        # Old (non RSA_PAD) format, the one Telethon sends: sha1(data) + data + padding.
        digest, rest = block[1:21], block[21:]
        try:
            reader = BinaryReader(rest)
            inner = reader.tgread_object()
            length = reader.tell_position()
        except Exception as exc:
            raise HandshakeError("unreadable p_q_inner_data") from exc
        if c.sha1(rest[:length]) != digest:
            raise HandshakeError("p_q_inner_data hash mismatch")
        if not isinstance(inner, (types.PQInnerData, types.PQInnerDataDc)):
            raise HandshakeError(f"unsupported inner data {type(inner).__name__}")
        if inner.nonce != pending.nonce or inner.server_nonce != pending.server_nonce:
            raise HandshakeError("nonce mismatch inside p_q_inner_data")
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
        return answer, NewKey(key=auth_key, server_time=int(time.time()))

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.started >= cutoff:
                break
            self._pending.popitem(last=False)


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
