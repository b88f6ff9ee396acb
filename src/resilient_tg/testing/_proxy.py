"""FaultProxy: a TCP proxy that injects network faults between a client and a server.

Tests put it between a Telethon client and the MTProto test server (or any TCP
server) to make the network misbehave on cue: silently eat bytes, reset links,
refuse connects, add latency, throttle, or cut a link mid-frame. Every fault is
switched on by a plain method call, takes effect on live links at once, and is
ended by `FaultProxy.heal`.

    async with MTProtoTestServer() as server, FaultProxy(server.host, server.port) as proxy:
        session = MemorySession()
        session.set_dc(server.dc_id, proxy.host, proxy.port)  # talk through the proxy
        client = TelegramClient(session, server.api_id, server.api_hash)
        proxy.blackhole()  # ...the link goes silent; later proxy.heal() brings it back

Semantics in one place:

* A *link* is one accepted client connection plus its upstream connection.
* Counters count bytes *forwarded* (handed to the kernel for the receiving peer):
  ``bytes_up`` client->server, ``bytes_down`` server->client; ``bytes_dropped``
  counts bytes a blackhole ate (both directions).
* Faults apply per link and per direction: ``latency(s)`` delays every chunk by
  ``s`` one way (a round trip takes at least ``2*s``); ``bandwidth(r)`` paces each
  direction of each link to ``r`` bytes/s; ``cut_after(n)`` closes a link once ``n``
  more bytes have been forwarded on it, both directions counted together.
* A blackhole drops bytes; dropped bytes are never delivered. When it heals, links
  that lost nothing flow on as if nothing happened, while links that lost bytes (or a
  close) are aborted with a TCP RST: their byte stream has a hole that real TCP would
  have retransmitted, and handing the peer a stream with a hole would test garbage
  framing rather than a network fault. A NAT or middlebox that forgot the flow during
  an outage behaves the same way.
* A blackhole also swallows the TCP handshake: a link accepted during it is connected
  upstream only after heal(), and only if it lost nothing meanwhile.
* A one-way blackhole (``blackhole(direction="down")`` or ``"up"``) drops one
  direction only, the other flows: with ``"down"`` every request reaches the server and
  every answer is lost ("request delivered, answer dropped"). New links are connected
  upstream as usual; heal() aborts links that lost bytes, as above.
* A half-close (EOF) is forwarded as a half-close; a link ends when both directions
  have ended, or at once with a RST when either side fails or resets, or when the
  upstream cannot be reached.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from ._proxy_links import _DOWN, _UP, _Link, _LinkForwarding

__all__ = ["FaultProxy"]

_log = logging.getLogger("resilient_tg.testing.proxy")


def _check_seconds(name: str, value: float, *, allow_inf: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {kind} >= 0, got {value!r}")
    return value


class FaultProxy(_LinkForwarding):
    """A TCP proxy to ``upstream_host:upstream_port`` whose network can be broken on cue.

    Listens on ``host:port`` (port 0 picks a free port; read `port` after
    entering). Fault methods are synchronous and may be called from any task in the
    event loop; they act on live links immediately and stay on until `heal`.
    Leaving the ``async with`` block closes the listener and every link (FIN) and
    cancels every task the proxy started. Not thread-safe: use it from the event loop's
    thread.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._upstream_host = upstream_host
        self._upstream_port = upstream_port
        self._host = host
        self._port = port
        self._bound = False
        self._entered = False
        self._closing = False
        self._family = socket.AF_INET
        self._sockaddr: tuple[object, ...] = (host, port)
        self._listener: socket.socket | None = None
        # While refusing, a bound socket that does not listen keeps the port ours: a
        # connect is still refused, and no other process's bind(0) can take the port
        # and answer our clients (seen once in CI, with a refuse() after a reset()).
        self._hold: socket.socket | None = None
        self._tg: TaskGroup | None = None
        self._changed: anyio.Event | None = None  # set and replaced on every fault change
        self._links: dict[int, _Link] = {}
        self._next_link_id = 0
        # fault state
        self._blackholed = False  # both directions: no new link is connected upstream
        self._dropping: frozenset[str] = frozenset()  # directions a blackhole drops
        self._latency = 0.0
        self._bandwidth: int | None = None
        self._cut_after: int | None = None
        self._refused_until: float | None = None
        # counters
        self._links_total = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._bytes_dropped = 0

    # ------------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        """The address the proxy listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the same across refuse() periods); known after entering."""
        if not self._bound:
            raise RuntimeError("FaultProxy has no port yet: enter it with 'async with' first")
        return self._port

    @property
    def links_total(self) -> int:
        """Client connections accepted since start (including those accepted while
        blackholed)."""
        return self._links_total

    @property
    def links_open(self) -> int:
        """Links not yet closed."""
        return len(self._links)

    @property
    def bytes_up(self) -> int:
        """Bytes forwarded client -> server."""
        return self._bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes forwarded server -> client."""
        return self._bytes_down

    @property
    def bytes_dropped(self) -> int:
        """Bytes a blackhole dropped, both directions together."""
        return self._bytes_dropped

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FaultProxy:
        if self._entered:
            raise RuntimeError("a FaultProxy can only be entered once")
        self._entered = True
        infos = await anyio.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        self._family = family
        self._sockaddr = tuple(sockaddr)
        listener = self._bind()
        self._listener = listener
        self._host, self._port = listener.getsockname()[:2]
        self._bound = True
        self._changed = anyio.Event()
        tg = anyio.create_task_group()
        try:
            await tg.__aenter__()
        except BaseException:
            self._close_listener()
            raise
        self._tg = tg
        tg.start_soon(self._serve, name=f"FaultProxy {self._host}:{self._port} accept")
        _log.info(
            "FaultProxy listening on %s:%d -> %s:%d",
            self._host,
            self._port,
            self._upstream_host,
            self._upstream_port,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None, "FaultProxy exited without being entered"
        self._closing = True
        self._close_listener()
        self._release_port()
        for link in self._links.values():
            link.close(rst=False)
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            for link in list(self._links.values()):  # links whose task never ran
                self._finish_link(link)
            _log.info("FaultProxy %s:%d closed", self._host, self._port)

    # ------------------------------------------------------------------ faults

    def blackhole(self, direction: str = "both") -> None:
        """Silently drop every byte in both directions, on live and new links.

        Links stay open (no EOF, no reset). New connections are accepted but not
        connected upstream until heal(). See the module docstring for what heal() does
        to links that lost bytes.

        ``direction="down"`` drops only server->client bytes while client->server bytes
        still flow (requests are delivered, their answers are lost); ``"up"`` the
        reverse. A one-way blackhole lets new links connect upstream. A later call
        replaces the direction.
        """
        directions = {"both": frozenset((_UP, _DOWN)), _UP: frozenset((_UP,))}
        directions[_DOWN] = frozenset((_DOWN,))
        if direction not in directions:
            raise ValueError(f"direction must be 'both', 'up' or 'down', got {direction!r}")
        self._dropping = directions[direction]
        self._blackholed = direction == "both"
        self._notify()
        _log.info(
            "FaultProxy :%d: blackhole on (%s; %d live links)",
            self._port,
            "both ways" if direction == "both" else f"{direction} only",
            len(self._links),
        )

    def reset(self) -> None:
        """Abort every live link now with a TCP RST to both peers; new links work."""
        links = list(self._links.values())
        for link in links:
            link.close(rst=True)
        _log.info("FaultProxy :%d: reset %d links", self._port, len(links))

    def refuse(self, seconds: float) -> None:
        """Close the listening socket for ``seconds`` so connects are refused.

        Live links are untouched. Afterwards (or on heal()) the proxy listens again on
        the same port. ``math.inf`` refuses until heal().
        """
        seconds = _check_seconds("seconds", seconds, allow_inf=True)
        self._refused_until = anyio.current_time() + seconds
        self._close_listener()
        self._hold_port()
        self._notify()
        _log.info("FaultProxy :%d: refusing connects for %s s", self._port, seconds)

    def latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` in each direction, order preserved."""
        self._latency = _check_seconds("seconds", seconds)
        self._notify()
        _log.info("FaultProxy :%d: latency %s s each way", self._port, self._latency)

    def bandwidth(self, bytes_per_second: int) -> None:
        """Limit each direction of each link to ``bytes_per_second`` (> 0)."""
        if isinstance(bytes_per_second, bool) or bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be > 0, got {bytes_per_second!r}")
        self._bandwidth = int(bytes_per_second)
        self._notify()
        _log.info("FaultProxy :%d: bandwidth %d B/s per direction", self._port, self._bandwidth)

    def cut_after(self, n_bytes: int) -> None:
        """Close each live and new link after ``n_bytes`` more bytes are forwarded on it.

        Both directions count against one budget per link. The close lands wherever the
        budget runs out, mid-frame included (FIN, or RST if the kernel still holds
        unread bytes). A later call replaces the budget of live links.
        """
        if isinstance(n_bytes, bool) or n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0, got {n_bytes!r}")
        self._cut_after = int(n_bytes)
        for link in self._links.values():
            link.budget = self._cut_after
            if link.budget == 0:
                link.close(rst=False)
        self._notify()
        _log.info("FaultProxy :%d: cut links after %d more bytes", self._port, n_bytes)

    def heal(self) -> None:
        """End every fault at once and listen again if refusing.

        Links that lost bytes to a blackhole are aborted with a RST; all other links
        carry on (see the module docstring).
        """
        ended = [
            name
            for name, on in (
                ("blackhole", bool(self._dropping)),
                ("latency", self._latency > 0),
                ("bandwidth", self._bandwidth is not None),
                ("cut_after", self._cut_after is not None),
                ("refuse", self._refused_until is not None),
            )
            if on
        ]
        self._blackholed = False
        self._dropping = frozenset()
        self._latency = 0.0
        self._bandwidth = None
        self._cut_after = None
        if self._refused_until is not None:
            self._refused_until = None
            self._try_listen()
        aborted = 0
        for link in self._links.values():
            link.budget = None
            if link.lost_data:
                link.close(rst=True)
                aborted += 1
        self._notify()
        _log.info(
            "FaultProxy :%d: healed (%s); aborted %d links that lost data",
            self._port,
            ", ".join(ended) or "nothing to heal",
            aborted,
        )

    # ------------------------------------------------------------------ internals

    def _bind(self, *, listen: bool = True) -> socket.socket:
        held, self._hold = self._hold, None
        sock = held if held is not None else socket.socket(self._family, socket.SOCK_STREAM)
        try:
            if held is None:
                sock.setblocking(False)
                if os.name != "nt":
                    # so refuse() can listen again on the port while links still use it
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                port = self._port if self._bound else self._sockaddr[1]
                sock.bind((self._sockaddr[0], port, *self._sockaddr[2:]))
            if listen:
                sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    def _hold_port(self) -> None:
        """Keep the port bound (not listening) while connects are refused."""
        if self._hold is not None or self._closing or not self._bound:
            return  # before entering, __aenter__ binds; after exit, nothing is held
        try:
            self._hold = self._bind(listen=False)
        except OSError as exc:  # the next _try_listen reports and retries
            _log.warning("FaultProxy :%d: cannot hold the port while refusing: %s", self._port, exc)

    def _try_listen(self) -> bool:
        """Listen again on the same port; False if that is not possible right now."""
        if self._listener is not None:
            return True
        if self._closing:
            return False
        try:
            self._listener = self._bind()
        except OSError as exc:
            _log.warning("FaultProxy :%d: cannot listen again yet: %s", self._port, exc)
            return False
        return True

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            anyio.notify_closing(sock)  # wakes the accept loop with ClosedResourceError
            sock.close()

    def _release_port(self) -> None:
        held, self._hold = self._hold, None
        if held is not None:
            held.close()

    async def _serve(self) -> None:
        """Accept loop; sits out refusal periods and re-listens on the same port."""
        while not self._closing:
            while (until := self._refused_until) is not None:
                if await self._sleep_until(until) and self._refused_until == until:
                    self._refused_until = None
                    _log.info("FaultProxy :%d: refusal over, listening again", self._port)
            if not self._try_listen():
                await anyio.sleep(0.05)
                continue
            listener = self._listener
            assert listener is not None
            try:
                await anyio.wait_readable(listener)
            except anyio.ClosedResourceError:
                continue  # refuse() or exit closed it
            if listener is not self._listener:
                continue
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:  # e.g. out of file descriptors: back off a little
                _log.warning("FaultProxy :%d: accept failed: %s", self._port, exc)
                await anyio.sleep(0.05)
                continue
            self._start_link(conn)
