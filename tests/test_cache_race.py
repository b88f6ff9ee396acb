"""Two OS processes apply one update stream, each shuffled its own way, to one shared
cache (PostgreSQL, MariaDB, Redis): the result equals the stream applied in order.

Never skipped: CI starts the services. Unique table or key prefixes, removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resilient_tg.cache import CacheBackend, SQLCacheBackend
from resilient_tg.testing.cache_contract import CHANNEL, GROUP, USER

from .cache_race_worker import apply, make_stream, open_backend
from .test_cache_redis import REDIS_URL, delete_prefix, unique_prefix
from .test_cache_sql import MARIADB_URL, PG_URL, drop_tables
from .test_cache_sql import unique_prefix as unique_table_prefix

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).resolve().parent / "cache_race_worker.py"
URLS = {"postgresql": PG_URL, "mariadb": MARIADB_URL, "redis": REDIS_URL}
STEP = 60.0  # bounds every wait on a worker
MESSAGES = 40  # in the stream the workers race (cache_race_worker.make_stream)


async def start_worker(args: list[str]) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


async def same_state(backend: CacheBackend, want: str, got: str, ids: range) -> None:
    for chat_id in (USER, GROUP, CHANNEL):
        for message_id in ids:
            a = await backend.get_message(want, chat_id, message_id)
            b = await backend.get_message(got, chat_id, message_id)
            if a is None or a.deleted:  # a tombstone keeps the version stored at deletion
                assert (b is None, b is not None and b.deleted) == (a is None, a is not None)
            else:
                assert b == a
        assert await backend.history(got, chat_id, below=None, limit=1000) == (
            await backend.history(want, chat_id, below=None, limit=1000)
        )
        assert await backend.read_marks(got, chat_id) == await backend.read_marks(want, chat_id)
    assert await backend.cursor(got) == await backend.cursor(want)


async def race(kind: str, url: str, prefix: str, *workers: list[str]) -> None:
    """Start the workers, let them go together, and wait for each to finish."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for args in workers:
            procs.append(await start_worker([kind, url, prefix, *args]))
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), STEP)
            assert line.strip() == b"READY", line
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), STEP)
            assert line.startswith(b"DONE"), line
            assert await asyncio.wait_for(proc.wait(), STEP) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str, CacheBackend]]:
    """(kind, prefix, backend) on fresh tables or keys, removed afterwards."""
    kind = str(request.param)
    prefix = unique_prefix() if kind == "redis" else unique_table_prefix()
    backend = open_backend(kind, URLS[kind], prefix)
    try:
        yield kind, prefix, backend
    finally:
        try:
            if isinstance(backend, SQLCacheBackend):
                await drop_tables(backend)
            else:
                await delete_prefix(prefix)
        finally:
            await backend.aclose()


@pytest.mark.parametrize("shared", ["postgresql", "redis"], indirect=True)
async def test_two_processes_racing_one_shuffled_stream_end_in_the_in_order_state(
    shared: tuple[str, str, CacheBackend],
) -> None:
    kind, prefix, backend = shared
    seed = 1414
    await apply(backend, "in-order", make_stream(seed, MESSAGES))
    workers = [["raced", "stream", str(seed), str(shuffle)] for shuffle in (1, 2)]
    await race(kind, URLS[kind], prefix, *workers)
    await same_state(backend, "in-order", "raced", range(1, MESSAGES + 1))


@pytest.mark.parametrize("shared", ["postgresql", "mariadb", "redis"], indirect=True)
async def test_a_deletion_racing_the_put_of_its_id_in_another_process_always_wins(
    shared: tuple[str, str, CacheBackend],
) -> None:
    """Whichever of the two commits first, the id ends as a tombstone: never a live
    message beside a remembered deletion."""
    kind, prefix, backend = shared
    n = 120
    await race(
        kind, URLS[kind], prefix, ["acct", "put", str(n), "0"], ["acct", "delete", str(n), "0"]
    )
    live = [
        i
        for i in range(1, n + 1)
        if (m := await backend.get_message("acct", USER, i)) and not m.deleted
    ]
    assert live == []
    assert await backend.history("acct", USER, below=None, limit=1000) == []
