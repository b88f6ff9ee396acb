"""What the recovery scenarios share: a request probe, a proxy that keeps a record of
its links, and clients (ours and raw Telethon) behind a proxy each.

Every recovery figure is taken the same way for both sides: from the fault (a reset) or
the heal (an outage) to the first request answered through the client's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from typing import Any

import attrs
from telethon.tl import functions

from resilient_tg.testing import FaultProxy, MTProtoTestServer, TestUser

from ._common import OURS, OursWatch, open_ours, open_telethon

__all__ = [
    "LinkRecord",
    "Probe",
    "RecordingProxy",
    "Subject",
    "gave_up",
    "max_open",
    "open_subject",
    "since",
]

TRY_LIMIT = 1.0  # one probe request; a lost one is retried, so this bounds the error


class Probe:
    """Sends ``updates.getState`` in a loop; remembers when each answer came.

    ``start``/``stop`` run it as a task of its own, so a scenario can probe only from
    the fault on (nothing in flight before it: no answer can predate the fault).
    """

    def __init__(self, call: Any) -> None:
        self.call = call
        self.successes: list[float] = []
        self.failures = 0
        self.answered = asyncio.Event()  # set by the first answer
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.call(functions.updates.GetStateRequest()), TRY_LIMIT)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - failures are what we wait through
                self.failures += 1
                await asyncio.sleep(0.01)
            else:
                self.successes.append(time.monotonic())
                self.answered.set()
                await asyncio.sleep(0.02)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def first_after(self, start: float) -> float | None:
        return next((t for t in self.successes if t >= start), None)


@attrs.define
class LinkRecord:
    """One link of a RecordingProxy: accepted, connected to the server, closed (monotonic)."""

    accepted: float
    upstream: float | None = None
    closed: float | None = None


class RecordingProxy(FaultProxy):
    """A FaultProxy that keeps the history of its links (accept, upstream, close times).

    Each client sits behind a proxy of its own with a key of its own, so this proxy's
    links are that key's links. A link is the *server's* from the moment the proxy
    connects it upstream until the proxy closes it; a link accepted into a black hole
    and given up by the client stays open here (its FIN is lost) but never reaches the
    server. Built on FaultProxy's internals; a public link-event hook would replace it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: dict[int, LinkRecord] = {}

    def _start_link(self, conn: Any) -> None:
        super()._start_link(conn)
        self.history[self._next_link_id] = LinkRecord(time.monotonic())

    async def _connect_upstream(self, link: Any) -> Any:
        sock = await super()._connect_upstream(link)
        if sock is not None and link.id in self.history:
            self.history[link.id].upstream = time.monotonic()
        return sock

    def _finish_link(self, link: Any) -> None:
        super()._finish_link(link)
        record = self.history.get(link.id)
        if record is not None and record.closed is None:
            record.closed = time.monotonic()

    def accepts(self, start: float = -math.inf) -> list[float]:
        return sorted(r.accepted for r in self.history.values() if r.accepted >= start)

    def server_links(self) -> list[tuple[float, float]]:
        """Intervals during which the server had each link."""
        return [(r.upstream, r.closed or math.inf) for r in self.history.values() if r.upstream]

    def proxy_links(self) -> list[tuple[float, float]]:
        """Intervals during which the proxy held each link (dead ones in a black hole too)."""
        return [(r.accepted, r.closed or math.inf) for r in self.history.values()]


def max_open(intervals: Iterable[tuple[float, float]], start: float = -math.inf) -> int:
    """The most intervals open at one moment at or after ``start``. A link closed at the
    very instant another opened counts as overlapping (the stricter reading)."""
    events: list[tuple[float, int]] = []
    for opened, closed in intervals:
        if closed < start:
            continue
        events.append((max(opened, start), 1))
        events.append((closed, -1))
    events.sort(key=lambda e: (e[0], -e[1]))  # opens before closes at equal times
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@attrs.define
class Subject:
    """One client behind its own RecordingProxy, with its probe."""

    kind: str
    proxy: RecordingProxy
    probe: Probe
    watch: OursWatch | None = None  # ours only
    telethon: Any = None  # raw Telethon only
    phase: float = 0.0  # seconds added to the nominal outage
    fault: float = math.nan
    heal: float = math.nan
    tag: str = ""

    def recovered(self, since_heal: bool = True) -> float | None:
        """Seconds from the heal (or the fault) to the first answered request."""
        start = self.heal if since_heal else self.fault
        return since(self.probe.first_after(start), start)

    def server_links_max(self) -> int:
        return max_open(self.proxy.server_links(), self.fault)

    def proxy_links_max(self) -> int:
        return max_open(self.proxy.proxy_links(), self.fault)


async def open_subject(
    stack: contextlib.AsyncExitStack,
    server: MTProtoTestServer,
    user: TestUser,
    kind: str,
    **kwargs: Any,
) -> Subject:
    """A client of ``kind`` (OURS or a Telethon label; ``kwargs`` go to its constructor)
    logged in with a key of its own, behind a RecordingProxy of its own."""
    proxy = RecordingProxy(server.host, server.port)
    await stack.enter_async_context(proxy)
    if kind == OURS:
        client, watch = await stack.enter_async_context(
            open_ours(server, user, port=proxy.port, **kwargs)
        )
        return Subject(kind, proxy, Probe(client.telegram), watch=watch)
    raw, _ = await stack.enter_async_context(open_telethon(server, user, port=proxy.port, **kwargs))
    return Subject(kind, proxy, Probe(raw), telethon=raw)


def since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 3)


def gave_up(client: Any) -> bool:
    """Raw Telethon stopped reconnecting (its ``disconnected`` future holds the error)."""
    future = client.disconnected
    return bool(future.done() and not future.cancelled() and future.exception() is not None)
