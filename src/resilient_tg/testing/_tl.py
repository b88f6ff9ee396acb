"""TL serialisation the server writes by hand, and TL method names.

Telethon's generated classes parse every request and serialise every ordinary
response; what they don't cover (rpc_result, vectors, Bool, containers) is here.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
import zlib
from typing import Any

from telethon.tl import TLObject, TLRequest
from telethon.tl.alltlobjects import tlobjects

RPC_RESULT = 0xF35C6D01
RPC_ERROR = 0x2144CA19
MSG_CONTAINER = 0x73F1F8DC
GZIP_PACKED = 0x3072CFA1
VECTOR = 0x1CB5C415
BOOL_TRUE = 0x997275B5
BOOL_FALSE = 0xBC799737
MSGS_ACK = 0x62D6B459

# Results bigger than this are sent gzip_packed, as Telegram does.
GZIP_THRESHOLD = 4096
# A gzip_packed body may not inflate beyond this (a bomb gets the link closed).
MAX_INFLATED = 8 * 1024 * 1024


def tl_bytes(data: bytes) -> bytes:
    return bytes(TLObject.serialize_bytes(data))


def serialize(value: Any) -> bytes:
    """Boxed TL bytes for a response value: a TL object, a list (Vector), a bool or raw bytes."""
    if isinstance(value, bool):
        return struct.pack("<I", BOOL_TRUE if value else BOOL_FALSE)
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        parts = [struct.pack("<Ii", VECTOR, len(value))]
        for item in value:
            parts.append(struct.pack("<q", item) if isinstance(item, int) else bytes(item))
        return b"".join(parts)
    return bytes(value)


def rpc_result(req_msg_id: int, body: bytes) -> bytes:
    if len(body) > GZIP_THRESHOLD:
        packed = struct.pack("<I", GZIP_PACKED) + tl_bytes(gzip.compress(body))
        if len(packed) < len(body):
            body = packed
    return struct.pack("<Iq", RPC_RESULT, req_msg_id) + body


def rpc_error(req_msg_id: int, code: int, message: str) -> bytes:
    return (
        struct.pack("<Iq", RPC_RESULT, req_msg_id)
        + struct.pack("<Ii", RPC_ERROR, code)
        + (tl_bytes(message.encode()))
    )


def inflate(data: bytes) -> bytes:
    """Unpack gzip_packed data, refusing bombs."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise ValueError("gzip_packed body inflates beyond the limit")
    return out


def tl_name(obj_or_cls: Any) -> str:
    """The schema name of a Telethon TL class, e.g. ``messages.sendMessage``."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return _names_by_class().get(cls, cls.__name__)


def request_class(name: str) -> type[TLRequest]:
    """The Telethon request class for a schema method name; ValueError names unknown ones."""
    try:
        return _classes_by_name()[name]
    except KeyError:
        hint = ""
        lowered = {n.lower(): n for n in _classes_by_name()}
        if name.lower() in lowered:
            hint = f" (did you mean {lowered[name.lower()]!r}?)"
        raise ValueError(f"unknown TL method name {name!r}{hint}") from None


def _camel_to_schema(class_name: str) -> str:
    base = class_name.removesuffix("Request")
    return base[:1].lower() + base[1:]


@functools.cache
def _names_by_class() -> dict[type, str]:
    names: dict[type, str] = {}
    for cls in tlobjects.values():
        module = cls.__module__  # telethon.tl.functions.messages / telethon.tl.types.auth
        parts = module.split(".")
        namespace = parts[3] if len(parts) > 3 else ""
        short = _camel_to_schema(cls.__name__)
        names[cls] = f"{namespace}.{short}" if namespace else short
    return names


@functools.cache
def _classes_by_name() -> dict[str, type[TLRequest]]:
    return {
        name: cls
        for cls, name in _names_by_class().items()
        if isinstance(cls, type) and issubclass(cls, TLRequest)
    }


_CODE_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^(FLOOD_WAIT|FLOOD_PREMIUM_WAIT|SLOWMODE_WAIT|TAKEOUT_INIT_DELAY)_\d+$"), 420),
    (re.compile(r"^FLOOD_"), 420),
    (re.compile(r"^(PHONE|NETWORK|USER|FILE|STATS)_MIGRATE_\d+$"), 303),
    (
        re.compile(
            r"^(AUTH_KEY_UNREGISTERED|AUTH_KEY_INVALID|USER_DEACTIVATED|USER_DEACTIVATED_BAN|"
            r"SESSION_REVOKED|SESSION_EXPIRED|SESSION_PASSWORD_NEEDED|AUTH_KEY_PERM_EMPTY)$"
        ),
        401,
    ),
    (re.compile(r"^AUTH_KEY_DUPLICATED$"), 406),
    (re.compile(r"^(INTERNAL|RPC_CALL_FAIL|RPC_MCGET_FAIL|RANDOM_ID_DUPLICATE|.*_FAILED)$"), 500),
    (re.compile(r"^(CHAT_WRITE_FORBIDDEN|USER_PRIVACY_RESTRICTED|.*_FORBIDDEN)$"), 403),
)


def error_code_for(message: str) -> int:
    """Telegram's HTTP-like code for an error string (400 when it is not a known family)."""
    for pattern, code in _CODE_PATTERNS:
        if pattern.match(message):
            return code
    return 400
