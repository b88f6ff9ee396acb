"""The public records the test server hands out: accounts, requests, open links."""

from __future__ import annotations

import attrs

__all__ = ["ConnectionInfo", "RequestRecord", "TestBot", "TestUser"]


@attrs.frozen
class TestUser:
    """An account created with `MTProtoTestServer.create_user`."""

    __test__ = False  # not a pytest test class, despite the name

    id: int
    phone: str
    first_name: str
    username: str | None
    access_hash: int


@attrs.frozen
class TestBot:
    """A bot created with `MTProtoTestServer.create_bot`; log in with ``token``."""

    __test__ = False  # not a pytest test class, despite the name

    id: int
    username: str
    token: str = attrs.field(repr=False)
    access_hash: int


@attrs.frozen
class RequestRecord:
    """One API request the server received (the query inside any invokeWith* wrapper)."""

    method: str
    auth_key_id: int
    session_id: int
    msg_id: int
    user_id: int | None
    at: float
    # The DC whose listener the request came in on.
    dc_id: int = 2


@attrs.frozen
class ConnectionInfo:
    """A TCP link open now."""

    peer: tuple[str, int]
    transport: str
    auth_key_id: int | None
    session_id: int | None
    opened_at: float
    # The DC whose listener accepted the link.
    dc_id: int = 2
