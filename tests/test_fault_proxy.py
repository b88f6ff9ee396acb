"""FaultProxy: every fault does what it says, against a real TCP echo server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import socket
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from resilient_tg.testing import FaultProxy

from .porttools import refused_port

HOST = "127.0.0.1"
STEP = 5.0  # bound on every awaited step: a hang fails the test instead of blocking CI
SILENCE = 0.3  # how long "nothing arrives" is watched for
CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError)  # what a closed link looks like


@pytest.fixture
def anyio_backend() -> str:
    """Telethon is asyncio-only, so the proxy is tested on asyncio."""
    return "asyncio"


class EchoServer:
    """A localhost TCP echo server that records its connections (the proxy's upstream)."""

    def __init__(self) -> None:
        self.port = 0
        self.streams: list[SocketStream] = []  # server side of every accepted connection
        self.finished = 0  # connections whose handler has ended
        self._send_locks: list[anyio.Lock] = []  # the echo and push() take turns
        self._changed = anyio.Event()

    @property
    def accepted(self) -> int:
        return len(self.streams)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(STEP):
            while not predicate():
                await self._changed.wait()

    async def push(self, index: int, data: bytes) -> None:
        """Send ``data`` from the server side of connection ``index`` unprompted."""
        async with self._send_locks[index]:
            await self.streams[index].send(data)

    async def handle(self, stream: SocketStream) -> None:
        lock = anyio.Lock()
        self.streams.append(stream)
        self._send_locks.append(lock)
        self._notify()
        try:
            async with stream:
                async for chunk in stream:
                    async with lock:
                        await stream.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self.finished += 1
            self._notify()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    async with await anyio.create_tcp_listener(local_host=HOST) as listener:
        server.port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, server.handle)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def proxied() -> AsyncIterator[tuple[EchoServer, FaultProxy]]:
    async with echo_server() as echo, FaultProxy(HOST, echo.port) as proxy:
        yield echo, proxy


async def connect(
    stack: contextlib.AsyncExitStack, proxy: FaultProxy, port: int | None = None
) -> SocketStream:
    with anyio.fail_after(STEP):
        stream = await anyio.connect_tcp(HOST, port or proxy.port)
    return await stack.enter_async_context(stream)


async def recv_exactly(stream: SocketStream, n: int) -> bytes:
    buf = bytearray()
    with anyio.fail_after(STEP):
        while len(buf) < n:
            buf += await stream.receive(n - len(buf))
    return bytes(buf)


async def roundtrip(stream: SocketStream, data: bytes) -> None:
    with anyio.fail_after(STEP):
        await stream.send(data)
        assert await recv_exactly(stream, len(data)) == data


async def recv_until_closed(stream: SocketStream) -> bytes:
    """Everything the stream delivers until the link closes (EOF or reset)."""
    buf = bytearray()
    with anyio.fail_after(STEP):
        try:
            while True:
                buf += await stream.receive()
        except CLOSED:
            pass
    return bytes(buf)


async def assert_silent(*streams: SocketStream) -> None:
    """Nothing at all (no bytes, no EOF, no reset) arrives on any stream for a while."""
    got: list[object] = []

    async def watch(stream: SocketStream) -> None:
        try:
            got.append(await stream.receive())
        except CLOSED as exc:
            got.append(exc)

    with anyio.move_on_after(SILENCE):
        async with anyio.create_task_group() as tg:
            for stream in streams:
                tg.start_soon(watch, stream)
    assert got == []


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll proxy state that has no event of its own; bounded."""
    with anyio.fail_after(STEP):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


async def connect_refused(port: int) -> bool:
    """True if connecting gets ECONNREFUSED (anyio wraps it), False if it connects."""
    try:
        stream = await anyio.connect_tcp(HOST, port)
    except OSError as exc:
        cause = exc if isinstance(exc, ConnectionRefusedError) else exc.__cause__
        if isinstance(cause, ConnectionRefusedError):
            return True
        raise
    await stream.aclose()
    return False


def port_accepts(port: int) -> bool:
    """A blocking connect, so no event-loop turn passes: shows what a fault method did
    before it returned."""
    try:
        sock = socket.create_connection((HOST, port), timeout=1)
    except ConnectionRefusedError:
        return False
    sock.close()
    return True


# --------------------------------------------------------------------------- plain


@pytest.mark.anyio
async def test_forwards_both_ways_and_counts() -> None:
    payload = os.urandom(256 * 1024)
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        client = await connect(stack, proxy)
        await roundtrip(client, b"ping")

        async with anyio.create_task_group() as tg:  # bigger than the socket buffers
            tg.start_soon(client.send, payload)
            assert await recv_exactly(client, len(payload)) == payload

        await echo.push(0, b"push")  # server speaks first
        assert await recv_exactly(client, 4) == b"push"

        second = await connect(stack, proxy)
        await roundtrip(second, b"two")

        assert proxy.links_total == 2
        assert proxy.links_open == 2
        assert proxy.bytes_up == 4 + len(payload) + 3
        assert proxy.bytes_down == 4 + len(payload) + 4 + 3
        assert proxy.bytes_dropped == 0

        await client.send_eof()  # a half-close travels through; the echo server closes
        assert await recv_until_closed(client) == b""
        await wait_until(lambda: proxy.links_open == 1)
        await roundtrip(second, b"still there")
        assert echo.finished == 1


# --------------------------------------------------------------------------- blackhole


@pytest.mark.anyio
async def test_blackhole_drops_bytes_on_live_and_new_links() -> None:
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        live = await connect(stack, proxy)
        await roundtrip(live, b"before")
        proxy.blackhole()

        await live.send(b"lost")  # client -> server is dropped
        await echo.push(0, b"gone")  # and so is server -> client
        new = await connect(stack, proxy)  # accepted, but never connected through
        await new.send(b"x")
        await assert_silent(live, new)

        assert echo.accepted == 1
        assert proxy.links_total == 2
        assert proxy.links_open == 2
        assert proxy.bytes_dropped == len(b"lost") + len(b"gone") + len(b"x")
        assert proxy.bytes_up == proxy.bytes_down == len(b"before")


@pytest.mark.anyio
async def test_one_way_blackhole_delivers_requests_and_drops_answers() -> None:
    """blackhole(direction="down"): client -> server flows, server -> client is lost, on
    live and new links; heal() aborts the links that lost bytes."""
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        live = await connect(stack, proxy)
        await roundtrip(live, b"before")
        proxy.blackhole(direction="down")

        await live.send(b"delivered")
        new = await connect(stack, proxy)  # connected upstream: only answers are lost
        await new.send(b"also delivered")
        await echo.wait_for(lambda: echo.accepted == 2)
        await assert_silent(live, new)  # the echoes were dropped
        assert proxy.bytes_up == len(b"before") + len(b"delivered") + len(b"also delivered")
        assert proxy.bytes_down == len(b"before")
        assert proxy.bytes_dropped == len(b"delivered") + len(b"also delivered")

        proxy.heal()
        assert await recv_until_closed(live) == b""
        assert await recv_until_closed(new) == b""
        fresh = await connect(stack, proxy)
        await roundtrip(fresh, b"fresh")
        with pytest.raises(ValueError, match="direction"):
            proxy.blackhole(direction="sideways")


@pytest.mark.anyio
async def test_blackhole_heal_resumes_quiet_links_and_aborts_links_that_lost_bytes() -> None:
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        quiet = await connect(stack, proxy)
        lossy = await connect(stack, proxy)
        await roundtrip(quiet, b"q")
        await roundtrip(lossy, b"l")
        proxy.blackhole()

        await lossy.send(b"dropped")
        quiet_new = await connect(stack, proxy)  # sends nothing during the blackhole
        lossy_new = await connect(stack, proxy)
        await lossy_new.send(b"dropped too")
        await assert_silent(quiet, lossy, quiet_new, lossy_new)
        assert echo.accepted == 2

        proxy.heal()

        # Links that lost bytes have a hole in their stream: aborted, never resumed.
        assert await recv_until_closed(lossy) == b""
        assert await recv_until_closed(lossy_new) == b""
        # Links that lost nothing flow on; the new one is connected upstream only now.
        await roundtrip(quiet, b"same link, flowing again")
        await roundtrip(quiet_new, b"connected after heal")
        assert echo.accepted == 3
        fresh = await connect(stack, proxy)
        await roundtrip(fresh, b"fresh")
        await wait_until(lambda: proxy.links_open == 3)


# --------------------------------------------------------------------------- reset


@pytest.mark.anyio
async def test_reset_aborts_live_links_and_new_links_work() -> None:
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        first = await connect(stack, proxy)
        second = await connect(stack, proxy)
        await roundtrip(first, b"1")
        await roundtrip(second, b"2")

        proxy.reset()

        with anyio.fail_after(1), pytest.raises(CLOSED):
            await first.receive()
        with anyio.fail_after(1), pytest.raises(CLOSED):
            await second.receive()
        await echo.wait_for(lambda: echo.finished == 2)  # the server side is gone too

        again = await connect(stack, proxy)
        await roundtrip(again, b"new link")
        await wait_until(lambda: proxy.links_open == 1)
        assert proxy.links_total == 3


@pytest.mark.anyio
async def test_reset_is_a_tcp_rst() -> None:
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        client = await connect(stack, proxy)
        await roundtrip(client, b"x")
        proxy.reset()
        with anyio.fail_after(1), pytest.raises(anyio.BrokenResourceError) as info:
            await client.receive()
        assert isinstance(info.value.__cause__, ConnectionResetError)


# --------------------------------------------------------------------------- refuse


@pytest.mark.anyio
async def test_refuse_closes_the_port_for_a_while_and_keeps_live_links() -> None:
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        port = proxy.port
        live = await connect(stack, proxy)
        await roundtrip(live, b"before")

        started = anyio.current_time()
        proxy.refuse(0.3)
        assert not port_accepts(port)  # closed before refuse() returned
        assert await connect_refused(port)
        await roundtrip(live, b"live link untouched")

        with anyio.fail_after(STEP):  # poll connects until the refusal is over
            while True:
                if not await connect_refused(port):
                    break
                await anyio.sleep(0.02)
        assert anyio.current_time() - started >= 0.3
        assert proxy.port == port
        await roundtrip(await connect(stack, proxy), b"listening again")


@pytest.mark.anyio
async def test_heal_ends_refusal_early() -> None:
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        port = proxy.port
        proxy.refuse(math.inf)
        assert await connect_refused(port)
        proxy.heal()
        assert port_accepts(port)  # listening again before heal() returned
        await roundtrip(await connect(stack, proxy), b"at once")
        assert proxy.port == port


@pytest.mark.anyio
async def test_a_refusal_keeps_the_port_from_other_listeners() -> None:
    """With no link left to hold it, a refused port is still the proxy's: another
    socket cannot bind it (CI once saw a bind(0) elsewhere take a refusing proxy's
    port, so the client reached a stranger instead of being refused)."""
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        port = proxy.port
        await roundtrip(await connect(stack, proxy), b"a link")
        proxy.refuse(math.inf)
        proxy.reset()  # RSTs leave no TIME_WAIT behind to keep the port in use
        await wait_until(lambda: proxy.links_open == 0)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with stranger, pytest.raises(OSError, match="in use") as taken:
            stranger.bind((HOST, port))
        assert taken.value.errno == errno.EADDRINUSE
        assert await connect_refused(port)
        proxy.heal()
        await roundtrip(await connect(stack, proxy), b"the same port again")
        assert proxy.port == port


# --------------------------------------------------------------------------- latency


@pytest.mark.anyio
async def test_latency_delays_each_direction_in_order() -> None:
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        client = await connect(stack, proxy)
        await roundtrip(client, b"warm")
        proxy.latency(0.1)

        started = anyio.current_time()
        for part in (b"a", b"b", b"c"):
            await client.send(part)
        assert await recv_exactly(client, 3) == b"abc"
        assert anyio.current_time() - started >= 2 * 0.1  # 0.1 s each way

        proxy.latency(30)
        await client.send(b"in flight")
        proxy.heal()  # releases chunks already waiting out the latency
        assert await recv_exactly(client, 9) == b"in flight"
        started = anyio.current_time()
        await roundtrip(client, b"fast again")
        assert anyio.current_time() - started < 0.2


# --------------------------------------------------------------------------- bandwidth


@pytest.mark.anyio
async def test_bandwidth_limits_throughput() -> None:
    rate, size = 100_000, 25_000
    payload = os.urandom(size)
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        client = await connect(stack, proxy)
        proxy.bandwidth(rate)

        started = anyio.current_time()
        await client.send(payload)
        assert await recv_exactly(client, size) == payload
        assert anyio.current_time() - started >= size / rate  # each direction is paced

        proxy.bandwidth(1_000)  # 100 s for this payload, unless heal() lifts the limit
        big = os.urandom(100_000)
        await client.send(big)
        first = await client.receive()
        assert len(first) < 1_000
        proxy.heal()
        assert first + await recv_exactly(client, len(big) - len(first)) == big


# --------------------------------------------------------------------------- cut_after


@pytest.mark.anyio
async def test_cut_after_closes_live_and_new_links_mid_stream() -> None:
    payload = bytes(range(60))
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        live = await connect(stack, proxy)
        await roundtrip(live, b"not counted")
        up, down = proxy.bytes_up, proxy.bytes_down
        proxy.cut_after(100)  # 60 up + 40 of the 60 echoed down

        await live.send(payload)
        assert await recv_until_closed(live) == payload[:40]
        assert (proxy.bytes_up - up, proxy.bytes_down - down) == (60, 40)

        new = await connect(stack, proxy)
        await new.send(payload)
        assert await recv_until_closed(new) == payload[:40]

        proxy.cut_after(0)  # zero more bytes: live links close at once
        idle = await connect(stack, proxy)
        assert await recv_until_closed(idle) == b""

        proxy.heal()
        healed = await connect(stack, proxy)
        await roundtrip(healed, bytes(1000))
        await wait_until(lambda: proxy.links_open == 1)


@pytest.mark.anyio
async def test_cut_after_budget_is_shared_by_both_directions() -> None:
    async with proxied() as (echo, proxy), contextlib.AsyncExitStack() as stack:
        client = await connect(stack, proxy)
        await roundtrip(client, b"x")
        proxy.bandwidth(20_000)  # 1000-byte slices: both directions pace at once
        proxy.cut_after(1500)
        async with anyio.create_task_group() as tg:
            tg.start_soon(echo.push, 0, bytes(5000))
            tg.start_soon(client.send, bytes(5000))
            received = await recv_until_closed(client)
        assert proxy.bytes_up + proxy.bytes_down == 2 + 1500
        assert len(received) == proxy.bytes_down - 1


# --------------------------------------------------------------------------- heal, exit


@pytest.mark.anyio
async def test_heal_ends_every_fault_at_once() -> None:
    async with proxied() as (_, proxy), contextlib.AsyncExitStack() as stack:
        proxy.blackhole()
        proxy.latency(10)
        proxy.bandwidth(1)
        proxy.cut_after(1)
        proxy.refuse(math.inf)
        proxy.heal()
        client = await connect(stack, proxy)
        with anyio.fail_after(2):
            await roundtrip(client, os.urandom(64 * 1024))


@pytest.mark.anyio
async def test_exit_closes_listener_links_and_tasks() -> None:
    def proxy_tasks() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if "FaultProxy" in t.get_name()]

    async with echo_server() as echo, contextlib.AsyncExitStack() as stack:
        async with FaultProxy(HOST, echo.port) as proxy:
            port = proxy.port
            flowing = await connect(stack, proxy)
            await roundtrip(flowing, b"x")
            proxy.blackhole()
            waiting = await connect(stack, proxy)  # accepted, not connected upstream
            await wait_until(lambda: proxy.links_open == 2)
            proxy.latency(10)  # tasks parked in timed waits must go too
            assert proxy_tasks()
        assert proxy.links_open == 0
        assert proxy_tasks() == []
        assert await connect_refused(port)
        assert await recv_until_closed(flowing) == b""
        assert await recv_until_closed(waiting) == b""
        await echo.wait_for(lambda: echo.finished == 1)


@pytest.mark.anyio
async def test_upstream_down_resets_the_client() -> None:
    with refused_port(HOST) as dead_port:
        async with FaultProxy(HOST, dead_port) as proxy, contextlib.AsyncExitStack() as stack:
            client = await connect(stack, proxy)
            assert await recv_until_closed(client) == b""
            await wait_until(lambda: proxy.links_open == 0)
            assert proxy.links_total == 1


# --------------------------------------------------------------------------- validation


@pytest.mark.anyio
async def test_bad_arguments_name_the_parameter() -> None:
    async with proxied() as (_, proxy):
        calls: list[tuple[Callable[[], None], str]] = [
            (lambda: proxy.latency(-0.1), "seconds"),
            (lambda: proxy.latency(math.nan), "seconds"),
            (lambda: proxy.latency(math.inf), "seconds"),
            (lambda: proxy.refuse(-1), "seconds"),
            (lambda: proxy.bandwidth(-5), "bytes_per_second"),
            (lambda: proxy.bandwidth(0), "bytes_per_second"),
            (lambda: proxy.cut_after(-1), "n_bytes"),
        ]
        for call, name in calls:
            with pytest.raises(ValueError, match=name):
                call()


def test_port_is_known_only_after_entering() -> None:
    proxy = FaultProxy(HOST, 1)
    with pytest.raises(RuntimeError):
        _ = proxy.port
