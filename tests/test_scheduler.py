"""The process's timer scheduler: timers, sleeps, one per event loop, herd pacing, stalls.

Timers run on the real event loop and the real clock; bounds on lateness are generous
(a loaded CI machine), bounds on earliness are strict (a timer never fires early).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import threading
import time
import weakref

import anyio
import pytest

from resilient_tg._scheduler import (
    HERD_WINDOW,
    MAX_GAP,
    SPREAD,
    STALL,
    TICK,
    Scheduler,
    get_scheduler,
)

pytestmark = pytest.mark.anyio

# How late a timer may fire on a loaded machine before a test calls it broken.
LATE = 0.5


def fresh() -> Scheduler:
    """A scheduler of its own on the running loop: no entries of other tests or clients."""
    return Scheduler(asyncio.get_running_loop())


def herd(scheduler: Scheduler, n: int) -> list[tuple[float, float]]:
    """``n`` attempts asking for admission back to back (no await between them); for
    each, bounds of the loop time its start was reserved for (the clock moves by a
    microsecond or so between two asks, so the start is read as before/after + delay)."""
    starts = []
    for _ in range(n):
        before = scheduler.time()
        delay = scheduler.admission_delay()
        after = scheduler.time()
        assert delay >= 0
        starts.append((before + delay, after + delay))
    return starts


def assert_spaced(starts: list[tuple[float, float]], offsets: list[float]) -> None:
    """Each start is ``offsets[k]`` after the first one (within what the clock allows)."""
    first_low, first_high = starts[0]
    for (low, high), offset in zip(starts, offsets, strict=True):
        assert low - first_high - 1e-9 <= offset <= high - first_low + 1e-9


def busiest_100ms(starts: list[tuple[float, float]]) -> int:
    """The most attempt starts in any sliding 100 ms window."""
    times = sorted((low + high) / 2 for low, high in starts)
    return max(sum(1 for t in times[i:] if t < start + 0.1) for i, start in enumerate(times))


def spread(starts: list[tuple[float, float]]) -> float:
    """At least the time from the first start to the last (measured from above)."""
    return starts[-1][1] - starts[0][0]


# Timers --------------------------------------------------------------------------------


async def test_timers_fire_in_time_order_not_in_the_order_they_were_added() -> None:
    scheduler = fresh()
    fired: list[str] = []
    done = asyncio.Event()
    start = scheduler.time()
    scheduler.call_later(0.06, fired.append, "third")
    scheduler.call_later(0.02, fired.append, "first")
    scheduler.call_at(start + 0.04, fired.append, "second")
    scheduler.call_at(start + 0.04, fired.append, "second, added later")  # ties: FIFO
    scheduler.call_later(0.08, done.set)
    assert len(scheduler) == 5
    with anyio.fail_after(5):
        await done.wait()
    assert fired == ["first", "second", "second, added later", "third"]
    assert len(scheduler) == 0


async def test_a_timer_never_fires_before_its_time() -> None:
    scheduler = fresh()
    fired_at: list[float] = []
    done = asyncio.Event()

    def note() -> None:
        fired_at.append(scheduler.time())
        done.set()

    start = scheduler.time()
    scheduler.call_later(0.1, note)
    with anyio.fail_after(5):
        await done.wait()
    assert start + 0.1 <= fired_at[0] < start + 0.1 + LATE


async def test_a_negative_delay_fires_on_the_next_run_of_the_loop() -> None:
    scheduler = fresh()
    fired = asyncio.Event()
    scheduler.call_later(-5.0, fired.set)
    with anyio.fail_after(LATE):
        await fired.wait()


async def test_a_cancelled_timer_never_fires_and_a_later_one_still_does() -> None:
    scheduler = fresh()
    fired: list[str] = []
    done = asyncio.Event()
    early = scheduler.call_later(0.01, fired.append, "cancelled")
    scheduler.call_later(0.03, fired.append, "kept")
    scheduler.call_later(0.05, done.set)
    early.cancel()
    with anyio.fail_after(5):
        await done.wait()
    assert fired == ["kept"]
    assert len(scheduler) == 0


async def test_cancelling_a_timer_that_already_ran_is_harmless() -> None:
    scheduler = fresh()
    fired: list[int] = []
    done = asyncio.Event()
    timer = scheduler.call_later(0.0, fired.append, 1)
    scheduler.call_later(0.01, done.set)
    with anyio.fail_after(5):
        await done.wait()
    timer.cancel()
    assert fired == [1]
    assert len(scheduler) == 0


async def test_an_earlier_timer_added_later_rearms_the_scheduler() -> None:
    """The loop timer is armed for the head of the heap: a sooner entry must not wait
    for the later one."""
    scheduler = fresh()
    fired = asyncio.Event()
    scheduler.call_later(3600, fired.set)
    start = time.monotonic()
    scheduler.call_later(0.02, fired.set)
    with anyio.fail_after(5):
        await fired.wait()
    assert time.monotonic() - start < LATE
    assert len(scheduler) == 1  # the hour-long one is still there


async def test_a_failing_timer_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = fresh()
    fired = asyncio.Event()

    def broken() -> None:
        raise ZeroDivisionError

    scheduler.call_later(0.0, broken)
    scheduler.call_later(0.0, fired.set)
    with anyio.fail_after(5):
        await fired.wait()
    assert any(
        r.name == "resilient_tg.scheduler" and "failed (a bug)" in r.getMessage()
        for r in caplog.records
    )


async def test_cancelled_timers_are_dropped_when_the_scheduler_next_runs() -> None:
    """Cancelling is lazy (an entry stays until it comes due), but a backlog of cancelled
    entries does not outlive the scheduler's next run."""
    scheduler = fresh()
    timers = [scheduler.call_later(3600 + i, lambda: None) for i in range(5000)]
    for timer in timers:
        timer.cancel()
    live = scheduler.call_later(7200, lambda: None)
    fired = asyncio.Event()
    scheduler.call_later(0.01, fired.set)
    with anyio.fail_after(5):
        await fired.wait()
    assert len(scheduler) == 1  # only the live, far entry
    live.cancel()


# Sleeps --------------------------------------------------------------------------------


async def test_sleep_wakes_after_its_delay_on_an_entry_of_the_scheduler() -> None:
    scheduler = fresh()
    start = time.monotonic()
    sleeper = asyncio.ensure_future(scheduler.sleep(0.1))
    await asyncio.sleep(0)
    assert len(scheduler) == 1  # the sleep is a scheduler entry
    with anyio.fail_after(5):
        await sleeper
    assert 0.1 <= time.monotonic() - start < 0.1 + LATE
    assert len(scheduler) == 0


async def test_sleep_of_nothing_returns_without_an_entry() -> None:
    scheduler = fresh()
    with anyio.fail_after(1):
        await scheduler.sleep(0)
        await scheduler.sleep(-1.0)
    assert len(scheduler) == 0


async def test_a_cancelled_sleep_ends_at_once_and_leaves_no_timer_behind() -> None:
    scheduler = fresh()
    sleeper = asyncio.ensure_future(scheduler.sleep(0.2))
    await asyncio.sleep(0)
    assert len(scheduler) == 1
    sleeper.cancel()
    with anyio.fail_after(1), pytest.raises(asyncio.CancelledError):
        await sleeper
    # Its entry is dropped (lazily) when it would have come due; nothing fires.
    with anyio.fail_after(5):
        while len(scheduler):  # noqa: ASYNC110 - no event announces a dropped entry
            await asyncio.sleep(0.01)


async def test_a_cancelled_long_sleep_is_dropped_when_the_scheduler_next_runs() -> None:
    scheduler = fresh()
    sleeper = asyncio.ensure_future(scheduler.sleep(3600))
    await asyncio.sleep(0)
    sleeper.cancel()
    with anyio.fail_after(1), pytest.raises(asyncio.CancelledError):
        await sleeper
    await scheduler.sleep(0.01)
    assert len(scheduler) == 0


async def test_anyio_cancellation_reaches_a_scheduler_sleep() -> None:
    scheduler = fresh()
    start = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        await scheduler.sleep(3600)
    assert scope.cancelled_caught
    assert time.monotonic() - start < LATE


async def test_many_sleepers_share_the_scheduler_and_wake_in_order() -> None:
    scheduler = fresh()
    woken: list[int] = []

    async def sleeper(i: int) -> None:
        await scheduler.sleep(0.01 * (i + 1))
        woken.append(i)

    with anyio.fail_after(5):
        await asyncio.gather(*(sleeper(i) for i in reversed(range(10))))
    assert woken == list(range(10))
    assert len(scheduler) == 0


# One scheduler per event loop ---------------------------------------------------------


async def test_get_scheduler_returns_the_same_scheduler_within_a_loop() -> None:
    scheduler = get_scheduler()
    assert get_scheduler() is scheduler

    async def elsewhere() -> Scheduler:
        return get_scheduler()

    assert await asyncio.ensure_future(elsewhere()) is scheduler  # another task, same loop
    assert scheduler.time() == pytest.approx(asyncio.get_running_loop().time(), abs=0.05)


def test_each_event_loop_gets_its_own_scheduler() -> None:
    async def scheduler_and_loop() -> tuple[Scheduler, asyncio.AbstractEventLoop]:
        return get_scheduler(), asyncio.get_running_loop()

    first, first_loop = asyncio.run(scheduler_and_loop())
    second, _ = asyncio.run(scheduler_and_loop())
    in_thread: list[tuple[Scheduler, asyncio.AbstractEventLoop]] = []
    thread = threading.Thread(target=lambda: in_thread.append(asyncio.run(scheduler_and_loop())))
    thread.start()
    thread.join(10)
    third, third_loop = in_thread[0]
    assert len({id(first), id(second), id(third)}) == 3
    # Each keeps its loop's clock (it holds the loop by a weak proxy: see the next test).
    assert first._loop.__repr__() == first_loop.__repr__()
    assert third._loop.__repr__() == third_loop.__repr__()


def test_get_scheduler_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        get_scheduler()


def test_a_finished_event_loop_is_not_kept_alive_by_its_scheduler() -> None:
    """Schedulers are kept per loop for as long as the loop exists, not longer: a program
    (or a test suite) that runs ``asyncio.run`` many times must not keep every loop, its
    scheduler and whatever its entries reference."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    schedulers: list[weakref.ref[Scheduler]] = []

    async def use_scheduler() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        schedulers.append(weakref.ref(get_scheduler()))

    for _ in range(3):
        asyncio.run(use_scheduler())
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
    assert [ref() for ref in schedulers] == [None, None, None]


# Herds ---------------------------------------------------------------------------------


async def test_a_lone_attempt_is_admitted_at_once() -> None:
    scheduler = fresh()
    assert scheduler.admission_delay() == 0.0


async def test_attempts_that_come_apart_are_each_admitted_at_once() -> None:
    scheduler = fresh()
    delays = []
    for _ in range(5):
        delays.append(scheduler.admission_delay())
        await asyncio.sleep(MAX_GAP * 5)
    assert delays == [0.0] * 5


async def test_a_herd_is_spaced_max_gap_apart_and_the_first_goes_at_once() -> None:
    scheduler = fresh()
    starts = herd(scheduler, 50)
    first_low, first_high = starts[0]
    assert first_high - first_low < 0.01  # admitted at once (no delay of its own)
    assert_spaced(starts, [k * MAX_GAP for k in range(50)])


@pytest.mark.parametrize("n", [2, 10, 100, 499, 500])
async def test_each_attempt_of_a_herd_keeps_gap_min_max_gap_spread_by_n_after_the_last(
    n: int,
) -> None:
    """The k-th attempt of a herd starts gap(k) = min(MAX_GAP, SPREAD / k) after the one
    before it, k being how many attempts asked within the herd window so far."""
    scheduler = fresh()
    starts = herd(scheduler, n)
    offsets = [0.0]
    for k in range(1, n):
        offsets.append(offsets[-1] + min(MAX_GAP, SPREAD / k))
    assert_spaced(starts, offsets)


async def test_a_herd_of_500_is_spread_over_at_most_spread_seconds() -> None:
    scheduler = fresh()
    starts = herd(scheduler, 500)
    assert 499 * MAX_GAP * 0.99 < spread(starts) <= SPREAD + 0.001
    # What the fleet benchmark measures: the busiest 100 ms holds at most ~17% of it.
    assert busiest_100ms(starts) / 500 <= 0.17


async def test_a_herd_larger_than_500_keeps_its_share_per_100ms_and_grows_only_slowly() -> None:
    """Beyond 500 the gaps shrink as SPREAD / n: no 100 ms holds more than 1/6 of the herd,
    and the whole spread grows with the log of its size, SPREAD * (1 + ln(n / 500))
    (2,000: 1.43 s), never linearly (a fixed rate would hold 2,000 back 2.4 s)."""
    scheduler = fresh()
    starts = herd(scheduler, 2000)
    expected = SPREAD * (1 + math.log(2000 / 500))
    assert expected * 0.97 <= spread(starts) <= expected * 1.03
    assert busiest_100ms(starts) / 2000 <= 0.17


async def test_retries_of_a_herd_are_spaced_but_do_not_count_as_more_clients() -> None:
    """500 clients whose first attempts are refused retry within probe_delay: 1,000 asks
    in the window, but a herd of 500, so the gap stays MAX_GAP and no 100 ms holds more
    than 1/6 of the fleet's attempts (counting each ask as a separate reservation would
    halve the gap and put a third of the fleet into one 100 ms)."""
    scheduler = fresh()
    clients = [object() for _ in range(500)]
    starts = []
    for who in clients * 2:  # every client asks twice: its attempt and one retry
        before = scheduler.time()
        delay = scheduler.admission_delay(who)
        after = scheduler.time()
        starts.append((before + delay, after + delay))
    offsets = [k * MAX_GAP for k in range(1000)]
    assert_spaced(starts, offsets)
    assert busiest_100ms(starts) / 500 <= 0.17
    assert len(scheduler._asking) == 500


async def test_admit_lets_a_lone_attempt_go_at_once() -> None:
    scheduler = fresh()
    started = scheduler.time()
    await scheduler.admit(object())
    assert scheduler.time() - started < 0.05
    assert len(scheduler) == 0  # no entry was needed


async def test_a_backlog_after_a_late_loop_is_released_one_gap_apart_not_in_a_burst() -> None:
    """What the 500-client fleet showed: the loop, busy with a herd's handshakes, runs
    late, and every place whose time has passed would start at once. Places are released
    one per gap of the loop's real time instead."""
    scheduler = fresh()
    admitted: list[float] = []

    async def attempt() -> None:
        await scheduler.admit(object())
        admitted.append(scheduler.time())

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(attempt)
        await asyncio.sleep(0)  # every attempt has asked for its place
        await asyncio.sleep(0)
        time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop runs 0.3 s late
    assert len(admitted) == 60
    gaps = [b - a for a, b in itertools.pairwise(sorted(admitted))]
    # The planned places (72 ms in all) have all passed by the time the loop runs again:
    # still each start is about a gap after the one before, not all at once. The times
    # are taken when each waiting task resumes, which jitters by a fraction of a gap on a
    # busy machine; a burst would put them microseconds apart.
    assert min(gaps) >= MAX_GAP * 0.5
    assert busiest_100ms([(t, t) for t in admitted]) <= 0.1 / MAX_GAP + 1


async def test_a_cancelled_attempt_gives_up_its_place() -> None:
    scheduler = fresh()
    admitted: list[int] = []

    async def attempt(k: int) -> None:
        await scheduler.admit(object())
        admitted.append(k)

    tasks = [asyncio.ensure_future(attempt(k)) for k in range(5)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    with anyio.fail_after(5):
        await asyncio.gather(*tasks, return_exceptions=True)
    assert admitted == [0, 2, 3, 4]


async def test_the_herd_window_forgets_old_attempts() -> None:
    """A herd is what asked within HERD_WINDOW: once it has passed, the next attempt is
    lone again (admitted at once) however large the herd was."""
    scheduler = fresh()
    herd(scheduler, 100)
    await asyncio.sleep(HERD_WINDOW + 0.05)
    assert scheduler.admission_delay() == 0.0
    assert len(scheduler._asked) == 1


# Stalls --------------------------------------------------------------------------------


async def test_a_stall_of_the_loop_is_metered_while_watched() -> None:
    scheduler = fresh()
    scheduler.watch_stalls()
    assert len(scheduler) == 1  # the tick
    try:
        await scheduler.sleep(TICK / 2)
        time.sleep(0.6)  # noqa: ASYNC251 - the point: the loop does not run meanwhile
        with anyio.fail_after(5):
            while not scheduler.stalled:  # noqa: ASYNC110 - metered by the next tick
                await asyncio.sleep(0.01)
        # About 0.6 s less the tick's own period; never more than the whole block + slack.
        assert 0.6 - 2 * TICK <= scheduler.stalled < 0.6 + LATE
    finally:
        scheduler.unwatch_stalls()
    await scheduler.sleep(TICK * 2)
    assert len(scheduler) == 0  # no watcher left: no tick


async def test_a_short_delay_of_the_loop_is_not_a_stall() -> None:
    scheduler = fresh()
    scheduler.watch_stalls()
    try:
        time.sleep(STALL / 4)  # noqa: ASYNC251 - a short block, below the threshold
        await scheduler.sleep(TICK * 3)
    finally:
        scheduler.unwatch_stalls()
    assert scheduler.stalled == 0.0


async def test_stalls_are_not_metered_while_nobody_watches() -> None:
    scheduler = fresh()
    scheduler.watch_stalls()
    scheduler.watch_stalls()
    scheduler.unwatch_stalls()
    assert len(scheduler) == 1  # one watcher left: still ticking
    scheduler.unwatch_stalls()
    scheduler.unwatch_stalls()  # one too many: harmless
    time.sleep(0.5)  # noqa: ASYNC251 - a block nobody meters
    await scheduler.sleep(TICK * 2)
    assert scheduler.stalled == 0.0
    assert len(scheduler) == 0
