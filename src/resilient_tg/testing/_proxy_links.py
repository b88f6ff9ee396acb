"""The per-link half of `FaultProxy`: forwarding one link's bytes under the faults.

Each accepted link gets a task that connects upstream and runs four more, a reader
and a writer per direction with a small queue between them. Readers drop what a
blackhole eats; writers apply latency, blackhole, bandwidth and cut_after, and
re-check the faults whenever `_notify` says one changed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import struct
from typing import TYPE_CHECKING

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

_log = logging.getLogger("resilient_tg.testing.proxy")

_CHUNK = 65536  # largest read from a socket
_QUEUE_CHUNKS = 16  # chunks read ahead per direction before the reader waits
_PACE_SLICES_PER_SECOND = 20  # bandwidth() releases bytes in slices of ~50 ms worth
_UP = "up"  # client -> server
_DOWN = "down"  # server -> client


@attrs.frozen
class _Chunk:
    """Bytes read from one side (``b""`` means EOF) and when they were read."""

    read_at: float
    data: bytes


@attrs.define(eq=False)
class _Link:
    """One proxied connection: the accepted client socket and its upstream socket."""

    id: int
    client: socket.socket
    budget: int | None  # bytes left before cut_after() closes the link; None: no cut
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    server: socket.socket | None = None
    lost_data: bool = False  # a blackhole dropped bytes (or an EOF) of this link
    sending: int = 0  # sends in progress; a cut waits until they are out
    rst: bool = False  # close with SO_LINGER 0 so the peers see a reset

    def close(self, *, rst: bool) -> None:
        """Ask the link's task to end; the sockets are closed once its waits unwind."""
        self.rst = self.rst or rst
        self.scope.cancel()


async def _recv(sock: socket.socket) -> bytes:
    """Read up to one chunk; ``b""`` at EOF. Raises OSError on a reset."""
    while True:
        await anyio.wait_readable(sock)
        try:
            return sock.recv(_CHUNK)
        except BlockingIOError:
            continue


class _LinkForwarding:
    """Mixed into FaultProxy: the links, their tasks, and waiting for fault changes."""

    if TYPE_CHECKING:
        _port: int
        _upstream_host: str
        _upstream_port: int
        _tg: TaskGroup | None
        _changed: anyio.Event | None
        _links: dict[int, _Link]
        _next_link_id: int
        _blackholed: bool
        _dropping: frozenset[str]
        _latency: float
        _bandwidth: int | None
        _cut_after: int | None
        _links_total: int
        _bytes_up: int
        _bytes_down: int
        _bytes_dropped: int

    def _notify(self) -> None:
        """Wake every task waiting on a fault change."""
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until ``deadline``; False if a fault change woke us first."""
        changed = self._changed
        assert changed is not None
        while (delay := deadline - anyio.current_time()) > 0:  # timers may fire a hair early
            with anyio.move_on_after(delay):
                await changed.wait()
                return False
        return True

    async def _wait_for_change(self) -> None:
        changed = self._changed
        assert changed is not None
        await changed.wait()

    def _start_link(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next_link_id += 1
        self._links_total += 1
        link = _Link(id=self._next_link_id, client=conn, budget=self._cut_after)
        self._links[link.id] = link
        if link.budget == 0:
            link.close(rst=False)
        _log.debug(
            "FaultProxy :%d: link %d accepted%s",
            self._port,
            link.id,
            " into the blackhole" if self._blackholed else "",
        )
        assert self._tg is not None
        self._tg.start_soon(self._run_link, link, name=f"FaultProxy link {link.id}")

    def _finish_link(self, link: _Link) -> None:
        """Close the link's sockets (RST if asked) and forget it. Never awaits."""
        self._links.pop(link.id, None)
        for sock in (link.client, link.server):
            if sock is None or sock.fileno() == -1:
                continue
            if link.rst:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        _log.debug(
            "FaultProxy :%d: link %d closed%s", self._port, link.id, " (RST)" if link.rst else ""
        )

    async def _run_link(self, link: _Link) -> None:
        up_send, up_recv = anyio.create_memory_object_stream[_Chunk](_QUEUE_CHUNKS)
        down_send, down_recv = anyio.create_memory_object_stream[_Chunk](_QUEUE_CHUNKS)
        try:
            with link.scope, up_send, up_recv, down_send, down_recv:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read, link, link.client, up_send, _UP)
                    while self._blackholed:  # a blackhole lets no SYN through
                        await self._wait_for_change()
                    server = await self._connect_upstream(link)
                    if server is None:
                        link.close(rst=True)
                        return
                    tg.start_soon(self._write, link, up_recv, server, _UP)
                    tg.start_soon(self._read, link, server, down_send, _DOWN)
                    tg.start_soon(self._write, link, down_recv, link.client, _DOWN)
        finally:
            self._finish_link(link)

    async def _connect_upstream(self, link: _Link) -> socket.socket | None:
        try:
            infos = await anyio.getaddrinfo(
                self._upstream_host, self._upstream_port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            _log.debug("FaultProxy :%d: link %d: resolve failed: %s", self._port, link.id, exc)
            return None
        for family, _, _, _, sockaddr in infos:
            sock = socket.socket(family, socket.SOCK_STREAM)
            link.server = sock  # owned by the link from here on: _finish_link closes it
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    sock.connect(sockaddr)
                except BlockingIOError:
                    await anyio.wait_writable(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err)) from None
            except OSError as exc:
                _log.debug(
                    "FaultProxy :%d: link %d: upstream connect failed: %s",
                    self._port,
                    link.id,
                    exc,
                )
                link.server = None
                sock.close()
                continue
            return sock
        return None

    async def _read(
        self,
        link: _Link,
        src: socket.socket,
        out: MemoryObjectSendStream[_Chunk],
        direction: str,
    ) -> None:
        """Read one side into the queue; a blackhole drops what is read."""
        while True:
            try:
                data = await _recv(src)
            except (OSError, anyio.ClosedResourceError):
                link.close(rst=True)
                return
            if direction in self._dropping:
                link.lost_data = True
                if not data:
                    await anyio.sleep_forever()  # the FIN is lost too; heal() aborts
                self._bytes_dropped += len(data)
                continue
            await out.send(_Chunk(anyio.current_time(), data))
            if not data:
                return

    async def _write(
        self,
        link: _Link,
        inp: MemoryObjectReceiveStream[_Chunk],
        dst: socket.socket,
        direction: str,
    ) -> None:
        """Deliver queued chunks to ``dst`` under latency, blackhole, bandwidth, cut."""
        pacer = -math.inf  # when the previous paced slice was due
        while True:
            chunk = await inp.receive()
            while not await self._sleep_until(chunk.read_at + self._latency):
                pass  # latency changed: recompute the due time
            if direction in self._dropping:
                link.lost_data = True
                if not chunk.data:
                    await anyio.sleep_forever()
                self._bytes_dropped += len(chunk.data)
                continue
            if not chunk.data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    link.close(rst=True)
                return
            try:
                pacer = await self._forward(link, dst, memoryview(chunk.data), direction, pacer)
            except (OSError, anyio.ClosedResourceError):
                link.close(rst=True)
                return

    async def _forward(
        self, link: _Link, dst: socket.socket, view: memoryview, direction: str, pacer: float
    ) -> float:
        """Send ``view`` slice by slice, re-checking faults before every slice."""
        start: float | None = None  # when the slice being paced started its turn
        while view:
            if direction in self._dropping:
                link.lost_data = True
                self._bytes_dropped += len(view)
                break
            if link.budget == 0:  # spent; the cut follows once in-flight bytes are out
                await self._wait_for_change()
                continue
            n = len(view)
            rate = self._bandwidth
            if rate is not None:
                n = min(n, max(1, rate // _PACE_SLICES_PER_SECOND))
                if link.budget is not None:
                    n = min(n, link.budget)
                if start is None:
                    start = max(pacer, anyio.current_time())
                due = start + n / rate
                if not await self._sleep_until(due):
                    continue  # a fault changed: re-plan this slice
                pacer, start = due, None
            if link.budget is not None:
                # The other direction may have spent budget while we were pacing:
                # clamp now, and reserve before sending so both directions share it.
                if link.budget == 0:
                    continue
                n = min(n, link.budget)
                link.budget -= n
            link.sending += 1
            try:
                await self._send_all(dst, view[:n], direction)
            finally:
                link.sending -= 1
            view = view[n:]
            if link.budget == 0 and not link.sending:  # the last reserved byte is out
                _log.debug("FaultProxy :%d: link %d cut", self._port, link.id)
                link.close(rst=False)
            await checkpoint()  # a send that never blocks still lets other tasks run
        return pacer

    async def _send_all(self, sock: socket.socket, data: memoryview, direction: str) -> None:
        """Hand all of ``data`` to the kernel, counting bytes as they go out.

        Raises OSError when the peer is gone.
        """
        while data:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                continue
            data = data[sent:]
            if direction == _UP:
                self._bytes_up += sent
            else:
                self._bytes_down += sent
