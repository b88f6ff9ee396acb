"""A peer that does not speak MTProto: a transport error with backoff, never "a bug".

A small TCP server answers the client's first packet with garbage, an HTTP response,
TLS bytes, a few bytes and a close, or one well-framed packet and then garbage. The
client must keep retrying (paced by its policy), say in ``last_error`` what the peer
answered, never end in a final state, and come back once the peer is an MTProto
server again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import zlib
from collections.abc import AsyncIterator

import pytest

from resilient_tg import ConnectionState, ReconnectPolicy, StateReason
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, running

pytestmark = pytest.mark.anyio

S = ConnectionState
POLICY = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, connect_timeout=1.0)


def _framed(body: bytes, seq: int = 0) -> bytes:
    """A well-formed packet of MTProto's full transport (length, seq, body, crc32)."""
    head = struct.pack("<ii", len(body) + 12, seq) + body
    return head + struct.pack("<I", zlib.crc32(head))


ANSWERS = {
    # mode: (what the peer sends first, keep the link open after it?, text in last_error)
    "garbage": (random.Random(7).randbytes(300), True, "does not speak MTProto"),
    "http": (
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request",
        False,
        "HTTP/1.1 400 Bad Request",
    ),
    "tls": (
        bytes.fromhex("160303004a020000460303") + random.Random(8).randbytes(70),
        True,
        "\\x16\\x03\\x03",
    ),
    "truncated": (b"\x2a\x00\x00", False, "\\x00\\x00"),
    "valid-then-garbage": (
        _framed(random.Random(9).randbytes(28)) + b"GARBAGE!" * 8,
        True,
        "does not speak MTProto",
    ),
}


class FakePeer:
    """A TCP server that answers like ``mode``, or forwards to ``target`` once fixed."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.target: tuple[str, int] | None = None
        self.links = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> FakePeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.links += 1
        try:
            if self.target is not None:
                await self._forward(reader, writer, self.target)
            else:
                await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, keep_open, _ = ANSWERS[self.mode]
        if not await reader.read(4096):
            return
        writer.write(first)
        await writer.drain()
        if not keep_open:
            return
        # Whatever the client sends next is answered with garbage (valid-then-garbage), or
        # ignored; the link stays open until the client drops it.
        while await reader.read(4096):
            if self.mode == "valid-then-garbage":
                writer.write(b"GARBAGE!" * 8)
                await writer.drain()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


@contextlib.asynccontextmanager
async def fake_peer(mode: str) -> AsyncIterator[FakePeer]:
    async with FakePeer(mode) as peer:
        yield peer


def _store(server: MTProtoTestServer, port: int, *, with_key: bool) -> MemoryStore:
    key = server.issue_auth_key(None) if with_key else None
    return MemoryStore(
        SessionData(dc_id=server.dc_id, server_address="127.0.0.1", port=port, auth_key=key)
    )


@pytest.mark.parametrize("with_key", [False, True], ids=["handshake", "with-key"])
@pytest.mark.parametrize("mode", list(ANSWERS))
async def test_a_peer_that_is_not_mtproto_is_a_transport_error_retried_with_backoff(
    mtproto_server: MTProtoTestServer,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    with_key: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = ANSWERS[mode][2]
    async with fake_peer(mode) as peer:
        store = _store(mtproto_server, peer.port, with_key=with_key)
        async with running(store, mtproto_server, reconnect=POLICY, keepalive=FAST_KEEPALIVE) as (
            client,
            rec,
        ):
            await rec.until(lambda: client.health().attempt >= 3 and peer.links >= 3)
            health = client.health()
            assert health.state in (S.RECONNECTING, S.CONNECTING)
            assert health.last_error is not None
            assert "does not speak MTProto" in health.last_error
            assert f"127.0.0.1:{peer.port}" in health.last_error
            assert expected in health.last_error
            assert len(health.last_error) < 300
            retries = [c for c in rec.changes if c.new is S.RECONNECTING]
            assert retries
            assert all(c.reason is StateReason.TRANSPORT_ERROR for c in retries)
            assert all(c.next_delay is not None for c in retries)
            # Backoff: the attempt count grows with every failed attempt.
            attempts = [c.attempt for c in retries]
            assert attempts == sorted(attempts)
            assert attempts[-1] >= 3
    assert S.REJECTED not in rec.states()
    assert S.AUTH_LOST not in rec.states()
    assert S.GAVE_UP not in rec.states()
    bugs = [r.getMessage() for r in caplog.records if "(a bug)" in r.getMessage()]
    assert bugs == []


async def test_once_the_peer_is_an_mtproto_server_again_the_client_connects(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_peer("http") as peer:
        store = _store(mtproto_server, peer.port, with_key=False)
        async with running(store, mtproto_server, reconnect=POLICY, keepalive=FAST_KEEPALIVE) as (
            client,
            rec,
        ):
            await rec.until(lambda: client.health().attempt >= 2)
            assert "HTTP/1.1 400" in (client.health().last_error or "")
            peer.target = (mtproto_server.host, mtproto_server.port)
            await client.wait_connected(15)
            assert client.health().authorized is False
    assert rec.states()[-2:] == [S.CONNECTED, S.CLOSED]
    bugs = [r.getMessage() for r in caplog.records if "(a bug)" in r.getMessage()]
    assert bugs == []
