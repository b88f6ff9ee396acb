"""2d. A server that accepts TCP and fails every handshake: how often each client tries.

Each client talks to the real server through a switch of its own (a small forwarder
here). Once the client is connected the switch turns: it drops the live link and, from
then on, accepts every TCP connect, reads what the client sends first (up to 1 s),
answers an MTProto transport error (``-444`` in a TCP-full frame: the server refusing
the exchange) and closes the link. Unlike a refused connect, every one of these attempts
reached the server and cost it an accept, a read and a write; a client should back off.
Counted: the connects the switch accepted in the window, the same way for both sides.

The clients hold auth keys the server issued, so "handshake" here is the link's first
exchange (Telethon's ``connect()`` and its first request), not a DH key exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import zlib
from typing import Any

from ._common import (
    OURS,
    TELETHON_FOREVER,
    Config,
    Row,
    Scenario,
    bench_server,
    new_user,
    open_ours,
    open_telethon,
    ratio,
)

NAME = "handshake"
TITLE = "A server that fails every handshake"
GOAL = "ours makes fewer connection attempts than raw Telethon (connection_retries=None)"
KINDS = (OURS, TELETHON_FOREVER)
TRANSPORT_ERROR = -444


def _full_frame(body: bytes, seq: int = 0) -> bytes:
    """One TCP-full transport packet: length, sequence number, body, CRC32."""
    head = struct.pack("<ii", len(body) + 12, seq) + body
    return head + struct.pack("<I", zlib.crc32(head))


class FailingSwitch:
    """Forwards to ``upstream`` until `fail`; then fails every new link's first exchange."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.failing = False
        self.accepts: list[float] = []  # monotonic, while failing
        self._live: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FailingSwitch:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._live):
            writer.transport.abort()
        await self._server.wait_closed()

    def fail(self) -> None:
        self.failing = True
        for writer in list(self._live):
            writer.transport.abort()  # the live link drops (RST)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        try:
            if self.failing:
                self.accepts.append(time.monotonic())
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(reader.read(65536), 1.0)
                writer.write(_full_frame(struct.pack("<i", TRANSPORT_ERROR)))
                with contextlib.suppress(OSError):
                    await writer.drain()
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._live.add(up_writer)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._live.discard(up_writer)
                up_writer.transport.abort()
        except OSError:
            pass
        finally:
            self._live.discard(writer)
            writer.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.transport.abort()


async def run(cfg: Config) -> Scenario:
    result = Scenario(NAME, TITLE, GOAL)
    window = 5.0 if cfg.quick else 60.0
    attempts: dict[str, list[float]] = {}
    async with bench_server(result) as server, contextlib.AsyncExitStack() as stack:
        switches: dict[str, FailingSwitch] = {}
        for kind in KINDS:
            switch = await stack.enter_async_context(FailingSwitch(server.host, server.port))
            user = new_user(server, "Handshake")
            if kind == OURS:
                await stack.enter_async_context(open_ours(server, user, port=switch.port))
            else:
                await stack.enter_async_context(
                    open_telethon(server, user, port=switch.port, connection_retries=None)
                )
            switches[kind] = switch
        start = time.monotonic()
        for switch in switches.values():
            switch.fail()
        await asyncio.sleep(window)
        for kind, switch in switches.items():
            attempts[kind] = [round(t - start, 4) for t in switch.accepts if t - start <= window]
        # Raw Telethon starts a get_me() task after every reconnect it believes done;
        # thousands of them wait forever here. Cancelled, they end quietly.
        for task in asyncio.all_tasks():
            if "_handle_auto_reconnect" in getattr(task.get_coro(), "__qualname__", ""):
                task.cancel()
    result.raw = {"window_seconds": window, "attempts": attempts}
    ours, raw = len(attempts[OURS]), len(attempts[TELETHON_FOREVER])
    for kind in KINDS:
        count = len(attempts[kind])
        is_ours = kind == OURS
        result.rows.append(
            Row(
                NAME,
                f"{window:g} s of failed handshakes",
                kind,
                "connection attempts",
                count,
                "",
                ratio(count, ours),
                f"< Telethon's {raw}" if is_ours else "",
                ours < raw if is_ours else None,
            )
        )
    result.notes.append(
        "Raw Telethon's reconnect counts as done once the TCP connect succeeds, so it "
        "never waits its retry_delay here; each reconnect also starts a get_me() task."
    )
    if cfg.quick:
        result.notes.append("Quick mode: a 5 s window.")
    return result


def plot(scenario: Scenario, fig: Any) -> None:
    ax = fig.add_subplot(1, 1, 1)
    window = scenario.raw["window_seconds"]
    for j, (kind, times) in enumerate(scenario.raw["attempts"].items()):
        xs = [0.0, *times, window]
        ys = [0, *range(1, len(times) + 1), len(times)]
        ax.step(xs, ys, where="post", label=f"{kind}: {len(times)}", color=f"C{j}")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("seconds since the server began failing every handshake")
    ax.set_ylabel("connection attempts so far (symlog)")
    ax.set_title("A server that fails every handshake")
    ax.legend(fontsize=8)
