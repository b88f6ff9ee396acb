"""One timer scheduler per event loop, shared by every client of the process.

Keepalive pings, pong deadlines, lease renewals, flushes and reconnect timers are
entries in one heap driven by a single event-loop timer, not a sleeping task per client:
a connected idle client owns no task of its own, only a few entries here.

The scheduler also sees herds. Every connection attempt of the process asks
`Scheduler.admission_delay` when it may start: attempt starts are kept at least
`gap(n)` apart, where ``n`` is how many clients of the process asked in the last
`HERD_WINDOW` seconds (a client's retries take places of their own but count once),
and ``gap(n) = min(MAX_GAP, SPREAD / n)``. A lone client waits for nothing; a herd of
``n`` clients that lost their links together spreads its first attempts over
``n * MAX_GAP`` seconds up to 500 clients (500: 0.6 s), and beyond that
over about ``SPREAD * (1 + ln(n / 500))`` (2,000: 1.4 s; 5,000: 2.0 s): the gaps shrink
as the herd grows, so no 100 ms holds more than about 1/6 of it, and a large fleet is
never held back as a fixed rate would hold it. Clients in other processes are not seen:
across processes only the policy's jitter spreads a herd.

It also measures event-loop stalls for the keepalive: while any pong is awaited
(`watch_stalls`), a tick every `TICK` seconds notices when the loop ran more than `STALL`
seconds late, and `stalled` sums those stalls, so a pong's deadline can move by the time
the loop did not run.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

__all__ = [
    "HERD_WINDOW",
    "MAX_GAP",
    "SPREAD",
    "STALL",
    "TICK",
    "Scheduler",
    "Timer",
    "get_scheduler",
]

log = logging.getLogger("resilient_tg.scheduler")

#: Seconds a timer may fire late before it counts as an event-loop stall.
STALL = 0.25
#: How often the loop is measured while a pong is awaited (only then).
TICK = 0.1
#: Attempts asked for within this many seconds count as one herd.
HERD_WINDOW = 1.0
#: The largest gap kept between two attempt starts of the process (seconds).
MAX_GAP = 0.0012
#: Beyond SPREAD / MAX_GAP attempts, attempt k waits SPREAD / k after the one before.
SPREAD = 0.6


class Timer:
    """One entry: ``fn(*args)`` at loop time ``when`` unless cancelled first."""

    __slots__ = ("args", "cancelled", "fn", "owner", "when")

    def __init__(
        self,
        when: float,
        fn: Callable[..., object],
        args: tuple[Any, ...],
        owner: Scheduler | None = None,
    ) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        """Never run it (cheap: it is dropped when it comes due; what it would have called
        is let go at once, so a cancelled entry keeps no client alive)."""
        if self.cancelled:
            return  # cancelled already, or it ran
        self.cancelled = True
        self.fn = _noop
        self.args = ()
        if self.owner is not None:
            self.owner._cancelled += 1


class Scheduler:
    """The timers of every client on one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A proxy: the scheduler is kept per loop in a WeakKeyDictionary, and a strong
        # reference from the value would keep every loop that ever ran a client alive.
        self._loop: asyncio.AbstractEventLoop = weakref.proxy(loop)
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._cancelled = 0  # cancelled entries still in the heap
        # Herd pacing.
        self._asked: collections.deque[tuple[float, int]] = collections.deque()
        self._asking: dict[int, int] = {}  # who asked within HERD_WINDOW: how often
        self._next_free = 0.0
        self._gap = 0.0  # the gap of the last reservation
        # Attempts waiting for their place, released one at a time (see `admit`).
        self._admitting: collections.deque[tuple[float, float, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._admit_timer: Timer | None = None
        self._last_admitted = -math.inf
        # Stall metering.
        self._watchers = 0
        self._tick: Timer | None = None
        self._last_tick = 0.0
        #: Seconds the loop was stalled (ran more than STALL late) while metered.
        self.stalled = 0.0

    def time(self) -> float:
        """The loop's clock (monotonic seconds)."""
        return self._loop.time()

    def __len__(self) -> int:
        return len(self._heap)

    # Timers -----------------------------------------------------------------------

    def call_at(self, when: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Run ``fn(*args)`` at loop time ``when``; returns the entry (to cancel it)."""
        timer = Timer(when, fn, args, self)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if self._armed_at is None or when < self._armed_at:
            self._arm(when)
        return timer

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Run ``fn(*args)`` in ``delay`` seconds."""
        return self.call_at(self._loop.time() + max(0.0, delay), fn, *args)

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds on an entry (no timer of the loop's own per caller)."""
        if delay <= 0:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        timer = self.call_later(delay, _wake, future)
        try:
            await future
        finally:
            timer.cancel()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = None
        heap = self._heap
        now = self._loop.time()
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                self._cancelled -= 1
                continue
            fn, args = timer.fn, timer.args
            timer.cancelled = True  # ran: a later cancel() is a no-op
            timer.fn = _noop
            timer.args = ()
            try:
                fn(*args)
            except Exception:
                log.exception("resilient_tg timer %r failed (a bug); ignored", fn)
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        if len(heap) > 64 and self._cancelled > len(heap) // 2:
            # Mostly cancelled entries (e.g. answered pong deadlines): drop them at once.
            self._heap = heap = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0
        if heap:
            self._arm(heap[0][0])

    # Herds ------------------------------------------------------------------------

    def admission_delay(self, who: object = None) -> float:
        """Seconds the caller's connection attempt waits so that the attempts of the
        process stay spread (0 for a lone client); reserves its start. ``who`` names the
        client asking: a herd's size is how many clients asked within HERD_WINDOW, so a
        client's retries (a refused attempt is retried within probe_delay) take their
        own places in the spacing without counting as more clients."""
        now = self._loop.time()
        asked = self._asked
        asking = self._asking
        while asked and asked[0][0] < now - HERD_WINDOW:
            old = asked.popleft()[1]
            left = asking[old] - 1
            if left:
                asking[old] = left
            else:
                del asking[old]
        key = id(who) if who is not None else -next(self._seq) - 1
        asked.append((now, key))
        asking[key] = asking.get(key, 0) + 1
        gap = self._gap = min(MAX_GAP, SPREAD / len(asking))
        start = max(now, self._next_free)
        self._next_free = start + gap
        return start - now

    async def admit(self, who: object = None) -> None:
        """Wait for this connection attempt's place (`admission_delay`; none for a lone
        client). Places are released one at a time, each at least its gap after the one
        before as the loop really ran: a loop running late (a busy process, a herd's
        handshakes) releases a backlog one by one, never as a burst."""
        now = self._loop.time()
        planned = now + self.admission_delay(who)
        gap = self._gap
        if planned <= now and not self._admitting and now >= self._last_admitted + gap:
            self._last_admitted = now
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._admitting.append((planned, gap, future))
        self._arm_admission()
        await future  # cancelled: its place is skipped

    def _arm_admission(self) -> None:
        if self._admit_timer is None and self._admitting:
            planned, gap, _future = self._admitting[0]
            self._admit_timer = self.call_at(
                max(planned, self._last_admitted + gap), self._admit_next
            )

    def _admit_next(self) -> None:
        self._admit_timer = None
        now = self._loop.time()
        queue = self._admitting
        while queue and queue[0][2].done():
            queue.popleft()  # its attempt was cancelled meanwhile
        if queue:
            planned, gap, future = queue[0]
            if max(planned, self._last_admitted + gap) <= now:
                queue.popleft()
                future.set_result(None)
                self._last_admitted = now
        self._arm_admission()

    # Stalls -------------------------------------------------------------------------

    def watch_stalls(self) -> None:
        """Start (or keep) metering loop stalls: one more pong is awaited."""
        self._watchers += 1
        if self._tick is None:
            self._last_tick = self._loop.time()
            self._tick = self.call_later(TICK, self._on_tick)

    def unwatch_stalls(self) -> None:
        """One pong fewer is awaited; metering stops when none is."""
        self._watchers = max(0, self._watchers - 1)
        if self._watchers == 0 and self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def _on_tick(self) -> None:
        now = self._loop.time()
        late = now - self._last_tick - TICK
        if late > STALL:
            self.stalled += late
        self._last_tick = now
        self._tick = self.call_later(TICK, self._on_tick) if self._watchers else None


def _noop(*args: object) -> None:
    return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_SCHEDULERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler] = (
    weakref.WeakKeyDictionary()
)


def get_scheduler() -> Scheduler:
    """The running loop's scheduler (made on first use)."""
    loop = asyncio.get_running_loop()
    scheduler = _SCHEDULERS.get(loop)
    if scheduler is None:
        scheduler = _SCHEDULERS[loop] = Scheduler(loop)
    return scheduler
