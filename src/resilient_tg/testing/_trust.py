"""Which RSA keys Telethon trusts for the auth-key exchange.

Telethon encrypts req_DH_params only to keys it knows. A test server's key must be
trusted on purpose, never by importing this package: a trusted test key in a
production process would let anyone holding it sit in the middle.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from telethon.crypto import rsa as telethon_rsa

_lock = threading.Lock()
# fingerprint -> how many running servers in this process hold it trusted
_refs: dict[int, int] = {}


def _load(pem: str) -> tuple[int, object]:
    if not isinstance(pem, str) or "BEGIN RSA PUBLIC KEY" not in pem:
        raise ValueError(
            "trust_test_server() needs the server's public key in PKCS#1 PEM "
            "('-----BEGIN RSA PUBLIC KEY-----'), as MTProtoTestServer.public_key_pem gives it"
        )
    try:
        key = telethon_rsa.rsa.PublicKey.load_pkcs1(pem.encode("ascii"))
    except Exception as exc:
        raise ValueError(
            "trust_test_server(): the PEM does not hold a valid RSA public key"
        ) from exc
    return telethon_rsa._compute_fingerprint(key), key


def trust_test_server(public_key_pem: str) -> int:
    """Make Telethon in this process accept an MTProtoTestServer's RSA key.

    Needed only in a process other than the one that started the server (that one
    trusts its key while the server runs). Returns the key's fingerprint. The trust
    lasts until the process ends.
    """
    fingerprint, _ = _load(public_key_pem)
    with _lock:
        telethon_rsa.add_key(public_key_pem, old=False)
        _refs[fingerprint] = _refs.get(fingerprint, 0) + 1_000_000  # never dropped by servers
    return fingerprint


@contextlib.contextmanager
def trusted_key(public_key_pem: str) -> Iterator[int]:
    """Trust a key while the block runs (a running server in this process)."""
    fingerprint, _ = _load(public_key_pem)
    with _lock:
        telethon_rsa.add_key(public_key_pem, old=False)
        _refs[fingerprint] = _refs.get(fingerprint, 0) + 1
    try:
        yield fingerprint
    finally:
        with _lock:
            _refs[fingerprint] -= 1
            if _refs[fingerprint] <= 0:
                del _refs[fingerprint]
                telethon_rsa._server_keys.pop(fingerprint, None)
