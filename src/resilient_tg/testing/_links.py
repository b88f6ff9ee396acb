"""TCP listeners, one per DC, the links they accept and the sessions served on them.

Each `DcListener` owns one port; a `_Link` knows the DC it came in on, so the server
can give a handshake's key that DC and refuse (-404) a key made on another one. A
`_Session` is the server side of an MTProto session; pushes go to its current link.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import struct
import time
from collections.abc import Mapping
from typing import Protocol

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from ._handshake import HandshakeError
from ._key_links import KeyLinks
from ._transport import Framing, TransportError, open_framing
from ._world import AuthKeyRecord

log = logging.getLogger("resilient_tg.testing.server")

OUTBOX_SIZE = 10_000
RECENT_MSG_IDS = 1000
# Orders sessions by when the server first saw them (see MTProtoTestServer._session).
_SESSION_ORDER = itertools.count()


class _LinkServer(Protocol):
    """What links and listeners need of the server that owns them."""

    _links: set[_Link]
    _links_total: int
    _key_links: KeyLinks

    @property
    def _sessions(self) -> Mapping[tuple[bytes, int], _Session]: ...

    def _encrypt(self, item: _Out) -> bytes: ...

    def _on_packet(self, link: _Link, packet: bytes) -> None: ...


@attrs.define(eq=False)
class _Out:
    """One item for a link's writer: an encrypted message, raw packet, or a close."""

    kind: str  # "message" | "raw" | "transport_error" | "close"
    session: _Session | None = None
    body: bytes = b""
    content_related: bool = True
    response: bool = False


class _Session:
    """Server-side MTProto session: (auth key, session id), with msg_id and seqno state."""

    def __init__(self, record: AuthKeyRecord, session_id: int) -> None:
        self.record = record
        self.session_id = session_id
        self.born = next(_SESSION_ORDER)
        # The link this session is the current session of (pushes go there), if any.
        self.link: _Link | None = None
        self.announced = False
        self._seen: collections.deque[int] = collections.deque(maxlen=RECENT_MSG_IDS)
        self._seen_set: set[int] = set()
        self._last_msg_id = 0
        self._seq = 0

    def seen(self, msg_id: int) -> bool:
        """Remember a client msg_id; True if it was seen before (a duplicate)."""
        if msg_id in self._seen_set:
            return True
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(msg_id)
        self._seen_set.add(msg_id)
        return False

    def next_msg_id(self, *, response: bool) -> int:
        # Server msg_ids are odd: 1 mod 4 for responses, 3 mod 4 for everything else.
        base = int(time.time() * 2**32) & ~3
        if base <= self._last_msg_id:
            base = (self._last_msg_id & ~3) + 4
        msg_id = base | (1 if response else 3)
        self._last_msg_id = msg_id
        return msg_id

    def next_seqno(self, *, content_related: bool) -> int:
        if content_related:
            self._seq += 1
            return self._seq * 2 - 1
        return self._seq * 2


class _Link:
    """One accepted TCP link and the tasks that serve it."""

    def __init__(self, server: _LinkServer, stream: SocketStream, dc_id: int = 2) -> None:
        self.server = server
        self.stream = stream
        self.dc_id = dc_id
        try:
            address = stream.extra(SocketAttribute.remote_address)
            self.peer = (str(address[0]), int(address[1]))
        except Exception:  # noqa: BLE001 - a link reset before we looked has no address
            self.peer = ("?", 0)
        self.scope = anyio.CancelScope()
        self.framing: Framing | None = None
        self.session: _Session | None = None
        self.opened_at = time.time()
        self._send, self._receive = anyio.create_memory_object_stream[_Out](OUTBOX_SIZE)
        self.disconnect_at: float | None = None
        self._deadline_changed = anyio.Event()
        self._plain_msg_id = 0

    def close(self) -> None:
        self.scope.cancel()

    def dispose(self) -> None:
        """Release the outbox once the link's tasks are done."""
        self._send.close()
        self._receive.close()

    def push(self, item: _Out) -> None:
        """Queue without waiting; a peer that cannot keep up is dropped, as Telegram does."""
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            log.warning("link %s:%d cannot keep up; closing it", *self.peer)
            self.close()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def set_disconnect_delay(self, delay: float) -> None:
        self.disconnect_at = anyio.current_time() + max(0.0, delay)
        self._deadline_changed.set()

    def plain_msg_id(self) -> int:
        base = int(time.time() * 2**32) & ~3
        if base <= self._plain_msg_id:
            base = (self._plain_msg_id & ~3) + 4
        self._plain_msg_id = base | 1
        return self._plain_msg_id

    async def write_loop(self) -> None:
        assert self.framing is not None
        try:
            async with self._receive:
                async for item in self._receive:
                    if item.kind == "close":
                        break
                    if item.kind == "raw":
                        await self.framing.send(item.body)
                    elif item.kind == "transport_error":
                        code = struct.unpack("<i", item.body)[0]
                        await self.framing.send_transport_error(code)
                    else:
                        assert item.session is not None
                        await self.framing.send(self.server._encrypt(item))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        self.close()

    async def watchdog(self) -> None:
        """Close the link when a ping_delay_disconnect deadline passes with no new ping."""
        while True:
            deadline = self.disconnect_at
            changed = self._deadline_changed
            if deadline is None:
                await changed.wait()
            else:
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    await changed.wait()
                if self.disconnect_at == deadline and anyio.current_time() >= deadline:
                    log.debug("link %s:%d missed its ping deadline; closing", *self.peer)
                    self.close()
                    return
            if self._deadline_changed is changed:
                self._deadline_changed = anyio.Event()


class DcListener:
    """One DC's TCP listener. The port it binds first is kept across `stop`/`serve`,
    so a restarted server answers on the same address; ``advertised`` is the address
    help.getConfig shows for the DC (a proxy in front of it, say)."""

    def __init__(self, server: _LinkServer, dc_id: int, host: str, port: int) -> None:
        self.server = server
        self.dc_id = dc_id
        self.host = host
        self.port = port
        self.advertised: tuple[str, int] | None = None
        self._scope: anyio.CancelScope | None = None
        self._done: anyio.Event | None = None

    @property
    def public_address(self) -> tuple[str, int]:
        """Where clients are told to find this DC."""
        return self.advertised or (self.host, self.port)

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = int(listener.extra(SocketAttribute.local_port))
        self._done = done = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with listener, anyio.create_task_group() as links:
                    task_status.started()
                    await listener.serve(self._handle_link, links)
        finally:
            done.set()

    async def stop(self) -> None:
        """Close the port and every link it accepted."""
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            await self._done.wait()

    async def _handle_link(self, stream: SocketStream) -> None:
        server = self.server
        link = _Link(server, stream, self.dc_id)
        server._links.add(link)
        server._links_total += 1
        try:
            with link.scope:
                await self._serve_link(link)
        except Exception:  # a bug of ours must not take the server down
            log.exception("test server failed on a link from %s:%d", *link.peer)
        finally:
            server._links.discard(link)
            server._key_links.release(link)
            link.dispose()
            for session in server._sessions.values():
                if session.link is link:
                    session.link = None
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await stream.aclose()

    async def _serve_link(self, link: _Link) -> None:
        buffered = BufferedByteReceiveStream(link.stream)
        try:
            link.framing = await open_framing(link.stream, buffered)
        except _LINK_ERRORS as exc:
            log.debug("link from %s:%d: %s", *link.peer, _describe(exc))
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.write_loop)
            tg.start_soon(link.watchdog)
            try:
                while True:
                    packet = await link.framing.read_packet()
                    self.server._on_packet(link, packet)
                    await anyio.lowlevel.checkpoint()  # let the writer and other links run
            except _LINK_ERRORS as exc:
                log.debug("link from %s:%d closed: %s", *link.peer, _describe(exc))
            tg.cancel_scope.cancel()


_LINK_ERRORS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    TransportError,
    HandshakeError,
    OSError,
)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
