"""Encryption at rest for session stores: AES-256-GCM from ``cryptography`` (the
``crypto`` extra), so a leaked backup or database dump does not leak the account.

An encrypted blob is ``b"RTGE1" + nonce(12) + ciphertext+tag``; the store's
description is bound as associated data, so a blob copied to another store or
session name does not decrypt there either.
"""

from __future__ import annotations

import base64
import binascii
import os

from .._errors import SessionCorruptError

__all__ = ["MAGIC", "Encryptor", "resolve_key"]

MAGIC = b"RTGE1"
_NONCE = 12


def resolve_key(key: bytes | str | None, key_env: str | None) -> bytes | None:
    """The 32-byte key from a caller value (bytes, or base64/hex text) or an env var."""
    if key is not None and key_env is not None:
        raise ValueError("give either encryption_key or encryption_key_env, not both")
    if key_env is not None:
        raw = os.environ.get(key_env)
        if raw is None:
            raise ValueError(f"encryption key variable {key_env!r} is not set")
        key = raw
    if key is None:
        return None
    if isinstance(key, str):
        text = key.strip()
        decoded: bytes | None = None
        try:
            decoded = bytes.fromhex(text)
        except ValueError:
            try:
                decoded = base64.b64decode(
                    text + "=" * (-len(text) % 4), altchars=b"-_", validate=False
                )
            except binascii.Error:
                decoded = None
        key = decoded or b""
    if len(key) != 32:
        raise ValueError(
            "the encryption key must be 32 bytes (64 hex digits or 44 base64 characters)"
        )
    return bytes(key)


class Encryptor:
    """Seals and opens store payloads with one key. Never logs or shows the key."""

    def __init__(self, key: bytes, *, context: str) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "encryption at rest needs 'cryptography': pip install 'resilient-tg[crypto]'"
            ) from exc
        self._aead = AESGCM(key)
        self._context = context.encode()

    def __repr__(self) -> str:
        return "<Encryptor AES-256-GCM>"

    def seal(self, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, plain, self._context)

    def open(self, blob: bytes, *, source: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + 16:
            raise SessionCorruptError(
                f"{source}: the stored session is not encrypted, but an encryption key was given",
                store=source,
            )
        nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE :], self._context)
        except InvalidTag:
            raise SessionCorruptError(
                f"{source}: the stored session cannot be decrypted "
                "(wrong encryption key, or the data was altered)",
                store=source,
            ) from None


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)
