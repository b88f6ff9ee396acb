"""The server side of Telegram's 2FA password check (SRP), written from the spec.

https://core.telegram.org/api/srp. The server keeps only the verifier ``v = g^x mod p``
(never the password); for each ``account.getPassword`` it draws a secret ``b`` and
sends ``B = k*v + g^b``; ``auth.checkPassword`` carries the client's ``A`` and ``M1``,
which the server recomputes from ``v`` and ``b``. The client side is Telethon's
(``telethon.password.compute_check``); keeping the two apart means a mistake in
either one fails the login instead of cancelling out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import attrs

from ._crypto import DH_G, DH_PRIME

__all__ = [
    "NEW_SALT1_SIZE",
    "PBKDF2_ITERATIONS",
    "SrpChallenge",
    "check_m1",
    "new_challenge",
    "new_salts",
    "prime_bytes",
    "verifier",
]

# Every number in the hashes is 256 bytes, big-endian, left-padded with zeros.
SIZE = 256
PBKDF2_ITERATIONS = 100_000
# Telegram sends an 8-byte salt1 prefix in new_algo; the client appends 32 random bytes.
NEW_SALT1_SIZE = 8
SALT1_SUFFIX_SIZE = 32
SALT2_SIZE = 16
# g^a and g^b must stay 2^(2048-64) away from 0 and from p (the spec's safety margin).
_MARGIN_BITS = 2048 - 64


def _h(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _sh(data: bytes, salt: bytes) -> bytes:
    """SH(data, salt) := H(salt | data | salt)."""
    return _h(salt, data, salt)


def _pad(value: int) -> bytes:
    return value.to_bytes(SIZE, "big")


def prime_bytes() -> bytes:
    """p as Telegram sends it in the algo: 256 bytes, big-endian."""
    return _pad(DH_PRIME)


def _x(password: bytes, salt1: bytes, salt2: bytes) -> int:
    """x := PH2(password, salt1, salt2), as a big-endian number.

    PH1 := SH(SH(password, salt1), salt2);
    PH2 := SH(pbkdf2(sha512, PH1, salt1, 100000), salt2).
    """
    ph1 = _sh(_sh(password, salt1), salt2)
    derived = hashlib.pbkdf2_hmac("sha512", ph1, salt1, PBKDF2_ITERATIONS)
    return int.from_bytes(_sh(derived, salt2), "big")


def verifier(password: str, salt1: bytes, salt2: bytes) -> bytes:
    """v := g^x mod p, the only thing the server keeps (256 bytes)."""
    return _pad(pow(DH_G, _x(password.encode("utf-8"), salt1, salt2), DH_PRIME))


def new_salts() -> tuple[bytes, bytes]:
    """(salt1, salt2) for a password the server sets itself, as a client would choose:
    Telegram's 8-byte prefix plus 32 random bytes, and a 16-byte salt2."""
    salt1 = os.urandom(NEW_SALT1_SIZE) + os.urandom(SALT1_SUFFIX_SIZE)
    return salt1, os.urandom(SALT2_SIZE)


def _k() -> int:
    """k := H(p | g)."""
    return int.from_bytes(_h(_pad(DH_PRIME), _pad(DH_G)), "big")


def _in_safe_range(value: int) -> bool:
    diff = DH_PRIME - value
    return diff > 0 and diff.bit_length() >= _MARGIN_BITS and value.bit_length() >= _MARGIN_BITS


@attrs.frozen
class SrpChallenge:
    """One account.getPassword answer: the secret ``b`` and what was sent (``B``, ``srp_id``).

    Bound to the account, the password it was made for (its verifier) and the auth key
    that asked, so it cannot be replayed elsewhere.
    """

    srp_id: int
    account_id: int
    auth_key_id: bytes = attrs.field(repr=False)
    v: bytes = attrs.field(repr=False)
    b: int = attrs.field(repr=False)
    srp_B: bytes = attrs.field(repr=False)


def new_challenge(account_id: int, auth_key_id: bytes, v: bytes) -> SrpChallenge:
    """Draw a secret b (2048 bits) and compute B := (k*v + g^b) mod p."""
    v_int = int.from_bytes(v, "big")
    while True:
        b = secrets.randbits(2048)
        g_b = pow(DH_G, b, DH_PRIME)
        if not _in_safe_range(g_b):
            continue  # the client would refuse it ("bad g_b")
        big_b = (_k() * v_int + g_b) % DH_PRIME
        if big_b > 0:
            break
    srp_id = secrets.randbits(63) or 1
    return SrpChallenge(
        srp_id=srp_id,
        account_id=account_id,
        auth_key_id=auth_key_id,
        v=v,
        b=b,
        srp_B=_pad(big_b),
    )


def check_m1(challenge: SrpChallenge, salt1: bytes, salt2: bytes, a: bytes, m1: bytes) -> bool:
    """Whether the client's ``M1`` proves it knows the password behind ``challenge.v``.

    u := H(A | B); S := (A * v^u)^b mod p; K := H(S);
    M1 := H(H(p) xor H(g) | H(salt1) | H(salt2) | A | B | K).
    """
    if len(a) > SIZE:
        return False
    a_int = int.from_bytes(a, "big")
    if not _in_safe_range(a_int):
        return False
    a_bytes = _pad(a_int)
    u = int.from_bytes(_h(a_bytes, challenge.srp_B), "big")
    if u == 0:
        return False
    v = int.from_bytes(challenge.v, "big")
    s = pow(a_int * pow(v, u, DH_PRIME) % DH_PRIME, challenge.b, DH_PRIME)
    k_session = _h(_pad(s))
    p_hash, g_hash = _h(_pad(DH_PRIME)), _h(_pad(DH_G))
    expected = _h(
        bytes(x ^ y for x, y in zip(p_hash, g_hash, strict=True)),
        _h(salt1),
        _h(salt2),
        a_bytes,
        challenge.srp_B,
        k_session,
    )
    return hmac.compare_digest(expected, m1)
