"""The `exclusive` marker: a test that runs while no other test runs.

The suite runs on two xdist workers. A few tests start several processes of their own
(fleets of 300 accounts, the fault soak, the quick benchmark) and measure bounds that a
second test competing for the same two cores would stretch. Marking them `exclusive`
makes the other worker finish its current test and wait while they run, so one command
(`python -m pytest`) runs everything and a busy neighbour cannot fail them.

Two file locks shared by the workers of one run implement it, with writer preference:
every test passes the `gate`, then holds `running` shared (plain tests) or exclusive
(`exclusive` tests, which also keep the gate closed until they end, so no plain test
starts meanwhile). The wait happens outside pytest-timeout's timer: a test is timed
from when it may run.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

MARKER = "exclusive"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: runs while no other test runs (the other xdist worker waits)"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    with _turn(item, exclusive=item.get_closest_marker(MARKER) is not None):
        return (yield)


@contextlib.contextmanager
def _turn(item: pytest.Item, *, exclusive: bool) -> Iterator[None]:
    if not hasattr(item.config, "workerinput"):  # not under xdist: nothing runs beside us
        yield
        return
    # Each worker's basetemp is <the run's basetemp>/popen-gwN: the parent is per run.
    shared = Path(str(item.config._tmp_path_factory.getbasetemp())).parent  # type: ignore[attr-defined]
    with (
        open(shared / "tests.gate", "a+b") as gate,
        open(shared / "tests.running", "a+b") as running,
    ):
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(running, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(running, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)
