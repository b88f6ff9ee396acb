"""The server side of MTProto 2.0 cryptography, written from the spec.

https://core.telegram.org/mtproto/auth_key and /mtproto/description. The client
side is Telethon's; keeping our derivations separate from its code means a bug in
either one shows up as a failed handshake instead of cancelling out.
"""

from __future__ import annotations

import hashlib
import os
import struct

from telethon.crypto import AES  # AES-IGE through libssl when available
from telethon.tl.tlobject import TLObject

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "resilient_tg.testing needs the 'cryptography' package: pip install 'resilient-tg[testing]'"
    ) from exc

# Telegram's published 2048-bit safe prime and generator (core.telegram.org/mtproto/auth_key).
DH_PRIME = int(
    "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F"
    "48198A0AA7C14058229493D22530F4DBFA336F6E0AC925139543AED44CCE7C37"
    "20FD51F69458705AC68CD4FE6B6B13ABDC9746512969328454F18FAF8C595F64"
    "2477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4"
    "A4A695811051907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754"
    "FD17ED950D5965B4B9DD46582DB1178D169C6BC465B0D6FF9CA3928FEF5B9AE4"
    "E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956850CE929851F"
    "0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B",
    16,
)
DH_G = 3
# Telethon and the spec require 2^(2048-64) <= g_a, g_b <= dh_prime - 2^(2048-64).
DH_SAFETY = 2 ** (2048 - 64)
# A 256-bit secret exponent keeps a handshake cheap for fleets of test clients; the
# resulting g_a is still uniformly spread and passes every client check.
DH_EXPONENT_BITS = 256


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()  # noqa: S324 - MTProto mandates SHA-1 here


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def xor(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two strings of one length."""
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def int_to_bytes(value: int, length: int | None = None) -> bytes:
    """Big-endian bytes of a natural number (the encoding MTProto uses for pq, g_a...)."""
    if length is None:
        length = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


def nonce_bytes(value: int, length: int) -> bytes:
    """Telethon's TL layer keeps int128/int256 nonces as signed little-endian ints."""
    return value.to_bytes(length, "little", signed=True)


class ServerKey:
    """The server's RSA key pair, in the form the handshake needs it."""

    def __init__(self, private_pem: bytes | None = None) -> None:
        if private_pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = serialization.load_pem_private_key(private_pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("the stored server key is not an RSA private key")
            key = loaded
        self._key = key
        numbers = key.private_numbers()
        self.n = numbers.public_numbers.n
        self.e = numbers.public_numbers.e
        self._d = numbers.d
        self.fingerprint = fingerprint(self.n, self.e)

    @property
    def public_pem(self) -> str:
        """PKCS#1 PEM (``BEGIN RSA PUBLIC KEY``), the format Telethon's ``rsa.add_key`` reads."""
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode("ascii")
        )

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def decrypt_raw(self, block: bytes) -> bytes | None:
        """Textbook RSA decryption of a 256-byte block, as req_DH_params uses it."""
        value = int.from_bytes(block, "big")
        if len(block) != 256 or value >= self.n:
            return None
        return pow(value, self._d, self.n).to_bytes(256, "big")


def fingerprint(n: int, e: int) -> int:
    """Lower 64 bits of sha1(n, e as TL bytes), as a signed little-endian int64."""
    data = TLObject.serialize_bytes(int_to_bytes(n)) + TLObject.serialize_bytes(int_to_bytes(e))
    value: int = struct.unpack("<q", sha1(data)[-8:])[0]
    return value


def tmp_aes_key_iv(new_nonce: bytes, server_nonce: bytes) -> tuple[bytes, bytes]:
    """The temporary key protecting server_DH_params and set_client_DH_params."""
    ns = sha1(new_nonce + server_nonce)
    sn = sha1(server_nonce + new_nonce)
    nn = sha1(new_nonce + new_nonce)
    return ns + sn[:12], sn[12:20] + nn + new_nonce[:4]


def auth_key_id(key: bytes) -> bytes:
    """The 8 bytes that prefix every encrypted message: sha1(key)[12:20]."""
    return sha1(key)[12:20]


def new_nonce_hash(new_nonce: bytes, number: int, key: bytes) -> int:
    """new_nonce_hash1/2/3 of dh_gen_ok/retry/fail, as Telethon's signed LE int128."""
    digest = sha1(new_nonce + bytes([number]) + sha1(key)[:8])[4:20]
    return int.from_bytes(digest, "little", signed=True)


def message_key_iv(key: bytes, msg_key: bytes, *, from_client: bool) -> tuple[bytes, bytes]:
    """MTProto 2.0 AES key and IV for one message (x=0 client to server, x=8 back)."""
    x = 0 if from_client else 8
    a = sha256(msg_key + key[x : x + 36])
    b = sha256(key[40 + x : 76 + x] + msg_key)
    return a[:8] + b[8:24] + a[24:32], b[:8] + a[8:24] + b[24:32]


def msg_key_for(key: bytes, plaintext: bytes, *, from_client: bool) -> bytes:
    x = 0 if from_client else 8
    return sha256(key[88 + x : 120 + x] + plaintext)[8:24]


def ige_encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    return bytes(AES.encrypt_ige(data, key, iv))


def ige_decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    return bytes(AES.decrypt_ige(data, key, iv))


class CtrStream:
    """One direction of the obfuscated transport: AES-256-CTR with a continuous keystream."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()

    def apply(self, data: bytes) -> bytes:
        return self._ctx.update(data)


def random_padding(length_so_far: int) -> bytes:
    """12..1024 bytes of padding to a multiple of 16, as MTProto 2.0 requires (we use 12..27)."""
    return os.urandom(12 + (-(length_so_far + 12) % 16))
