"""Garbage on raw sockets never takes the test server down for other clients.

The server runs in a background event loop (a blocking portal) so that hypothesis can
drive plain sockets from the test thread; a logged-in Telethon client in that loop
must keep working after every example.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.network.mtprotostate import MTProtoState
from telethon.tl import functions
from telethon.tl.functions import ReqDHParamsRequest, ReqPqMultiRequest

from resilient_tg.testing import MTProtoTestServer

from .conftest import session_for

EXAMPLES = 600


class Harness:
    """A server and one logged-in client living in a background event loop."""

    def __init__(self, portal: BlockingPortal, server: MTProtoTestServer, client: TelegramClient):
        self.portal = portal
        self.server = server
        self.client = client
        record = next(iter(server._world.auth_keys.values()))
        self.key = AuthKey(record.key)
        self.salt = record.salt

    def client_works(self) -> bool:
        async def probe() -> bool:
            state = await self.client(functions.updates.GetStateRequest())
            return bool(state.pts >= 1)

        return self.portal.call(probe)

    def encrypted(self, body: bytes, *, good_salt: bool, content: bool) -> bytes:
        """A well-encrypted message on the client's key with an arbitrary body."""
        loggers: Any = collections.defaultdict(lambda: logging.getLogger("fuzz"))
        state = MTProtoState(self.key, loggers)
        if good_salt:
            state.salt = self.salt
        msg_id = state._get_new_msg_id()
        seq = state._get_seq_no(content)
        data = struct.pack("<qii", msg_id, seq, len(body)) + body
        return bytes(state.encrypt_message_data(data))


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """Errors the server logged: a failure it caught in its catch-all is still a bug."""
    handler = _ErrorLog()
    logger = logging.getLogger("resilient_tg.testing")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def harness(server_errors: list[logging.LogRecord]) -> Iterator[Harness]:
    with start_blocking_portal(backend="asyncio") as portal:
        server_cm = portal.wrap_async_context_manager(MTProtoTestServer())
        server = server_cm.__enter__()
        try:
            user = server.create_user("+15550001", "Sentinel")

            async def start_client() -> TelegramClient:
                client = TelegramClient(session_for(server), server.api_id, server.api_hash)
                await client.connect()
                await client.send_code_request(user.phone)
                await client.sign_in(user.phone, server.login_code(user.phone))
                return client

            client = portal.call(start_client)
            try:
                yield Harness(portal, server, client)
            finally:
                portal.call(client.disconnect)
        finally:
            server_cm.__exit__(None, None, None)


def full_frame(payload: bytes, seq: int = 0) -> bytes:
    head = struct.pack("<ii", len(payload) + 12, seq) + payload
    return head + struct.pack("<I", zlib.crc32(head))


def intermediate_frame(payload: bytes) -> bytes:
    return b"\xee\xee\xee\xee" + struct.pack("<i", len(payload)) + payload


def abridged_frame(payload: bytes) -> bytes:
    words = len(payload) // 4
    prefix = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
    return b"\xef" + prefix + payload


def plain_message(body: bytes) -> bytes:
    return struct.pack("<qqi", 0, 0x5F00000000000000, len(body)) + body


def wrap_all_ways(payload: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [full_frame(payload), intermediate_frame(payload), abridged_frame(payload)]
    )


random_bytes = st.binary(min_size=0, max_size=400)
word_aligned = random_bytes.map(lambda b: b[: len(b) // 4 * 4])


@st.composite
def frames(draw: st.DrawFn, harness: Harness) -> bytes:
    kind = draw(st.integers(min_value=0, max_value=8))
    if kind == 0:  # pure noise, sometimes starting like a known transport
        prefix = draw(st.sampled_from([b"", b"\xef", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd"]))
        return prefix + draw(random_bytes)
    if kind == 1:  # well framed noise
        return draw(word_aligned.flatmap(wrap_all_ways))
    if kind == 2:  # plain (unencrypted) messages with garbage bodies
        return draw(word_aligned.map(plain_message).flatmap(wrap_all_ways))
    if kind == 3:  # a real req_pq_multi, then a bogus req_DH_params
        nonce = draw(st.integers(min_value=-(2**127), max_value=2**127 - 1))
        first = plain_message(bytes(ReqPqMultiRequest(nonce)))
        bogus = ReqDHParamsRequest(
            nonce=nonce,
            server_nonce=draw(st.integers(min_value=-(2**127), max_value=2**127 - 1)),
            p=b"\x01",
            q=b"\x02",
            public_key_fingerprint=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
            encrypted_data=draw(st.binary(min_size=0, max_size=300)),
        )
        return full_frame(first, 0) + full_frame(plain_message(bytes(bogus)), 1)
    if kind == 4:  # an unknown auth key id with noise after it
        return draw(
            st.binary(min_size=8, max_size=8)
            .filter(lambda b: b != b"\0" * 8)
            .flatmap(lambda key_id: word_aligned.map(lambda rest: key_id + rest))
            .flatmap(wrap_all_ways)
        )
    if kind == 5:  # the real key id, then bytes that fail the msg_key check
        key_id = struct.pack("<Q", harness.key.key_id)
        return draw(word_aligned.map(lambda rest: key_id + rest).flatmap(wrap_all_ways))
    if kind == 6:  # correctly encrypted, garbage inside (unknown constructors, bad containers)
        body = draw(word_aligned.filter(bool))
        if draw(st.booleans()):
            body = struct.pack("<I", 0x73F1F8DC) + body  # pretend to be a container
        elif draw(st.booleans()):
            body = struct.pack("<I", 0x3072CFA1) + body  # pretend to be gzip_packed
        packet = harness.encrypted(body, good_salt=draw(st.booleans()), content=draw(st.booleans()))
        return full_frame(packet)
    if kind == 7:  # lengths that lie
        claimed = draw(st.sampled_from([0, 1, 7, 2**31 - 1, -5, 2**24]))
        return b"\xee\xee\xee\xee" + struct.pack("<i", claimed) + draw(random_bytes)
    # kind 8: a valid frame cut short at a random point
    whole = draw(word_aligned.flatmap(wrap_all_ways))
    return whole[: draw(st.integers(min_value=0, max_value=max(0, len(whole) - 1)))]


def send_raw(port: int, data: bytes, *, read: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        if read:
            sock.settimeout(0.02)
            with contextlib.suppress(OSError):  # timeouts and resets are both fine here
                sock.recv(4096)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same 600 frames on every run: a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_garbage_frames_never_take_the_server_down(harness: Harness, data: st.DataObject) -> None:
    frame = data.draw(frames(harness))
    send_raw(harness.server.port, frame, read=data.draw(st.booleans()))
    assert harness.client_works()


def test_server_is_still_whole_after_the_fuzz(
    harness: Harness, server_errors: list[logging.LogRecord]
) -> None:
    """Runs after the fuzz in file order: nothing failed inside, a new client works."""
    assert [r.getMessage() for r in server_errors] == []
    assert harness.client_works()
    assert harness.server.links_total > EXAMPLES

    async def fresh_client_logs_in() -> int:
        user = harness.server.create_user("+15559990001", "Late")
        client = TelegramClient(
            session_for(harness.server), harness.server.api_id, harness.server.api_hash
        )
        await client.connect()
        try:
            await client.send_code_request(user.phone)
            me = await client.sign_in(user.phone, harness.server.login_code(user.phone))
            return int(me.id)
        finally:
            await client.disconnect()

    assert harness.portal.call(fresh_client_logs_in) > 0
