"""Shared pieces of the scenarios: configuration, clients on both sides, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import attrs
from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.network import ConnectionTcpFull
from telethon.sessions import MemorySession
from telethon.tl import types

from resilient_tg import ConnectionState, ResilientClient, StateChange
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import MTProtoTestServer, TestUser

__all__ = [
    "OURS",
    "TELETHON_DEFAULT",
    "TELETHON_FOREVER",
    "Config",
    "LinkLog",
    "Row",
    "Scenario",
    "bench_server",
    "fd_count",
    "input_peer",
    "new_user",
    "open_ours",
    "open_telethon",
    "percentile",
    "poll_until",
    "ratio",
    "rss_bytes",
    "summary",
    "task_count",
    "wait_for_state",
]

OURS = "resilient_tg"
TELETHON_DEFAULT = "telethon (defaults)"
TELETHON_FOREVER = "telethon (connection_retries=None)"

# Every wait in a scenario is bounded by this unless it has a tighter bound of its own.
STEP_LIMIT = 60.0

log = logging.getLogger("benchmarks")


@attrs.frozen
class Config:
    """What a run does: quick (CI smoke) or full, and the seed of every random choice."""

    quick: bool
    seed: int = 20240601

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def rng(self, name: str) -> random.Random:
        """A generator per scenario, so skipping one (--only) changes no other's draws."""
        return random.Random(f"{self.seed}:{name}")


@attrs.frozen
class Row:
    """One line of the table: a measured value, its ratio to ours, and the goal verdict."""

    scenario: str
    case: str
    client: str
    metric: str
    value: float | int | str | None
    unit: str = ""
    ratio: float | None = None  # this client's value / ours (None where meaningless)
    goal: str = ""
    met: bool | None = None  # None: no goal for this row

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Scenario:
    """What a scenario hands back: table rows, raw samples, notes for the docs."""

    name: str
    title: str
    goal: str
    rows: list[Row] = attrs.field(factory=list)
    raw: dict[str, Any] = attrs.field(factory=dict)
    notes: list[str] = attrs.field(factory=list)
    plots: list[str] = attrs.field(factory=list)
    elapsed: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "goal": self.goal,
            "rows": [r.to_dict() for r in self.rows],
            "raw": self.raw,
            "notes": self.notes,
            "plots": self.plots,
            "elapsed_seconds": round(self.elapsed, 2),
            "error": self.error,
        }


# Statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "min": min(values) if values else None,
        "p50": percentile(values, 50),
        "mean": statistics.fmean(values) if values else None,
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def ratio(value: float | None, ours: float | None) -> float | None:
    if value is None or ours is None or ours == 0:
        return None
    return value / ours


# Process resources ------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(asyncio.all_tasks())


def settle_memory() -> None:
    gc.collect()
    gc.collect()


# Clients ----------------------------------------------------------------------------


def input_peer(user: TestUser) -> Any:
    return types.InputPeerUser(user.id, user.access_hash)


class LinkLog:
    """Times (monotonic) of one client's transport events, recorded by its connection class.

    Observes raw Telethon without patching it: the ``connection=`` extension point.
    """

    def __init__(self, fleet: LinkLog | None = None) -> None:
        self.fleet = fleet  # a log that also gets this client's attempts
        self.attempts: list[float] = []  # connect() called
        self.ups: list[float] = []  # connect() succeeded
        self.downs: list[float] = []  # disconnect() called (Telethon begins a reconnect)
        self.changed = asyncio.Event()

    def connection_class(self) -> type:
        return type("BenchConnection", (_RecordingConnection,), {"_bench_log": self})

    def note(self, what: list[float]) -> None:
        what.append(time.monotonic())
        self.changed.set()

    def first_after(self, what: list[float], start: float) -> float | None:
        return next((t for t in what if t >= start), None)

    async def wait(self, predicate: Callable[[], bool], limit: float) -> bool:
        """Wait until ``predicate()``; False when ``limit`` ran out first."""
        deadline = time.monotonic() + limit
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.1))
        return True


class _RecordingConnection(ConnectionTcpFull):  # type: ignore[misc]
    _bench_log: LinkLog

    async def connect(self, timeout: float | None = None, ssl: Any = None) -> None:
        log = self._bench_log
        log.note(log.attempts)
        if log.fleet is not None:
            log.fleet.note(log.fleet.attempts)
        await super().connect(timeout=timeout, ssl=ssl)
        self._bench_log.note(self._bench_log.ups)

    async def disconnect(self) -> None:
        self._bench_log.note(self._bench_log.downs)
        await super().disconnect()


class OursWatch:
    """State changes of a ResilientClient, with the monotonic time each was seen."""

    def __init__(self, client: ResilientClient) -> None:
        self.client = client
        self.changes: list[tuple[float, StateChange]] = []
        self.changed = asyncio.Event()
        client.on_state_change(self._on_change)

    def _on_change(self, change: StateChange) -> None:
        # StateChange.at is wall time; convert to monotonic once, here.
        self.changes.append((time.monotonic() - (time.time() - change.at), change))
        self.changed.set()

    def first(self, start: float, predicate: Callable[[StateChange], bool]) -> float | None:
        return next((t for t, c in self.changes if t >= start and predicate(c)), None)

    def last_before(
        self, end: float, predicate: Callable[[StateChange], bool]
    ) -> StateChange | None:
        found = [c for t, c in self.changes if t <= end and predicate(c)]
        return found[-1] if found else None


def _memory_store(server: MTProtoTestServer, host: str, port: int, key: bytes) -> MemoryStore:
    return MemoryStore(
        SessionData(dc_id=server.dc_id, server_address=host, port=port, auth_key=key)
    )


@contextlib.asynccontextmanager
async def open_ours(
    server: MTProtoTestServer,
    user: TestUser,
    *,
    host: str | None = None,
    port: int | None = None,
    connect: bool = True,
    **kwargs: Any,
) -> AsyncIterator[tuple[ResilientClient, OursWatch]]:
    """A ResilientClient logged in as ``user`` (a key the server issued: no DH exchange)."""
    key = server.issue_auth_key(user.id)
    store = _memory_store(server, host or server.host, port or server.port, key)
    kwargs.setdefault("shutdown_timeout", 5.0)
    client = ResilientClient(store, server.api_id, server.api_hash, **kwargs)
    watch = OursWatch(client)
    async with client:
        if connect:
            await client.wait_connected(STEP_LIMIT)
        yield client, watch


@contextlib.asynccontextmanager
async def open_telethon(
    server: MTProtoTestServer,
    user: TestUser,
    *,
    host: str | None = None,
    port: int | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[TelegramClient, LinkLog]]:
    """A raw Telethon client logged in as ``user``, its links recorded by a LinkLog."""
    session = MemorySession()
    session.set_dc(server.dc_id, host or server.host, port or server.port)
    session.auth_key = AuthKey(server.issue_auth_key(user.id))
    links = LinkLog()
    client = TelegramClient(
        session, server.api_id, server.api_hash, connection=links.connection_class(), **kwargs
    )
    await asyncio.wait_for(client.connect(), STEP_LIMIT)
    try:
        await asyncio.wait_for(client.get_me(), STEP_LIMIT)  # Telethon learns who it is
        yield client, links
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 10)


async def wait_for_state(
    client: ResilientClient, state: ConnectionState, limit: float = STEP_LIMIT
) -> bool:
    deadline = time.monotonic() + limit
    while client.state is not state:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def bounded(awaitable: Awaitable[Any], limit: float) -> tuple[bool, Any]:
    """(True, result) or (False, the exception); never raises but for cancellation."""
    try:
        return True, await asyncio.wait_for(awaitable, limit)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a benchmark records failures, it does not stop
        return False, exc


@contextlib.contextmanager
def quiet_logs() -> Any:
    """Telethon and our client log every reconnect; a benchmark of faults would drown."""
    saved = {name: logging.getLogger(name).level for name in ("telethon", "resilient_tg")}
    for name in saved:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


_phones = iter(range(1, 10**7))


def new_user(server: MTProtoTestServer, name: str = "User") -> TestUser:
    """A fresh account with a unique phone number."""
    return server.create_user(f"+1666{next(_phones):07d}", name)


async def poll_until(predicate: Callable[[], bool], limit: float, step: float = 0.02) -> bool:
    """Wait for a condition no event announces (it lives in another component); False
    when ``limit`` ran out first."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


def _server_crash(exc: BaseException) -> bool:
    """The test server's known crash: a link reset before it read the peer's address
    (``_handle_link``: TypedAttributeLookupError), which ends its task group."""
    import anyio

    if isinstance(exc, anyio.TypedAttributeLookupError):
        return True
    inner = getattr(exc, "exceptions", None)
    return bool(inner) and all(_server_crash(e) for e in inner)


@contextlib.asynccontextmanager
async def bench_server(scenario: Scenario, **kwargs: Any) -> AsyncIterator[MTProtoTestServer]:
    """An MTProtoTestServer whose known crash is recorded in the scenario, not raised."""
    try:
        async with MTProtoTestServer(**kwargs) as server:
            yield server
    except Exception as exc:
        if not _server_crash(exc):
            raise
        scenario.raw["server_crashed"] = True
        scenario.notes.append(
            "The MTProtoTestServer crashed during this scenario: a link was reset before the "
            "server read its peer address (TypedAttributeLookupError in _handle_link), which "
            "ends its serving task group; figures after that point are unreliable."
        )


async def drop_prefixed_tables(store: Any, tables: Sequence[str]) -> None:
    """Drop a benchmark's ``<table_prefix><table>`` tables in the store's database."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(store._database.target.url)
    try:
        async with engine.begin() as conn:
            for table in tables:
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {store.table_prefix}{table}"))
    finally:
        await engine.dispose()
