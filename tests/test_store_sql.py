"""SQLStore against real SQLite, the local PostgreSQL and the local MariaDB.

Nothing here skips: a database that is not running fails its tests (CI starts them
with .ci/services.sh). Every test works in its own tables (a unique table prefix)
and drops them afterwards, so parallel and earlier runs never collide.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from telethon import events
from telethon.crypto import AuthKey

from resilient_tg import LeaseLostError, SessionCorruptError, SessionInUseError
from resilient_tg.stores import (
    Entity,
    SessionData,
    SQLStore,
    StoreSession,
    UpdateState,
    open_store,
)
from resilient_tg.stores._sql_engine import idle_limit_ms, make_engine
from resilient_tg.stores._sql_url import read_options, target
from resilient_tg.testing import FaultProxy, MTProtoTestServer
from resilient_tg.testing.store_contract import StoreContract

from .conftest import STEP_TIMEOUT, login, telethon_client, wait_until

pytestmark = pytest.mark.anyio

PG_URL = os.environ.get("RESILIENT_TG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("RESILIENT_TG_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mariadb")
NETWORK_BACKENDS = ("postgresql", "mariadb")
WORKER = Path(__file__).resolve().parent / "sql_lease_worker.py"
RUN = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
_counter = itertools.count()
PASSWORD = "Pa55-w0rd-never-shown"


def server_url(backend: str, tmp_path: Path, *, password: str | None = None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.db"
    url = PG_URL if backend == "postgresql" else MARIADB_URL
    if password is not None:  # trust auth (PG) / an empty root password (MariaDB) ignore it
        scheme, rest = url.split("://", 1)
        user, host = rest.split("@", 1)
        url = f"{scheme}://{user}:{password}@{host}" if backend == "postgresql" else url
    return url


def via_proxy(url: str, port: int) -> str:
    parsed = sa.make_url(url)
    return parsed.set(port=port).render_as_string(hide_password=False)


def sample(n: int = 0, key: bytes | None = None) -> SessionData:
    return SessionData(
        dc_id=2,
        server_address=f"10.0.0.{n % 250 + 1}",
        port=443 + n,
        auth_key=key if key is not None else os.urandom(256),
        takeout_id=n or None,
        update_state=UpdateState(pts=10 + n, qts=2, date=1_700_000_000, seq=n, channels={1234: 7}),
        entities=(
            Entity(id=n + 1, access_hash=-(2**62), username="ünïcode", phone="+1555", name="A B"),
            Entity(id=-1001234, access_hash=42, username=None, phone=None, name=None),
        ),
    )


@contextlib.asynccontextmanager
async def raw_engine(store: SQLStore) -> AsyncIterator[Any]:
    """A plain engine on the store's database, for what the store itself never does."""
    engine = create_async_engine(store._database.target.url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def drop_tables(store: SQLStore) -> None:
    async with raw_engine(store) as engine, engine.begin() as conn:
        for table in ("leases", "sessions", "schema"):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {store.table_prefix}{table}"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    return f"rtgt_{RUN}_{next(_counter)}_"


@pytest.fixture
async def make_store(
    backend: str, tmp_path: Path, prefix: str
) -> AsyncIterator[Callable[..., SQLStore]]:
    """SQLStores on this test's tables; closed, and the tables dropped, afterwards."""
    stores: list[SQLStore] = []

    def make(name: str = "s", *, url: str | None = None, **kwargs: Any) -> SQLStore:
        kwargs.setdefault("table_prefix", prefix)
        store = SQLStore(url or server_url(backend, tmp_path), name=name, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()
    if stores:
        await drop_tables(SQLStore(server_url(backend, tmp_path), table_prefix=prefix))


# URLs and construction (no database needed) ------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("mysql://u@h/db", "mysql+asyncmy"),
        ("mariadb://u@h/db", "mariadb+asyncmy"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("mysql+aiomysql://u@h/db", "mysql+aiomysql"),
    ],
)
def test_plain_urls_get_an_async_driver_and_explicit_drivers_pass_through(
    url: str, driver: str
) -> None:
    assert SQLStore(url)._database.target.url.drivername == driver


def test_name_comes_from_the_url_and_a_conflicting_argument_is_an_error() -> None:
    assert SQLStore("sqlite:///x.db?name=bot").name == "bot"
    assert SQLStore("sqlite:///x.db", name="bot").name == "bot"
    assert SQLStore("sqlite:///x.db").name == "default"
    assert SQLStore("sqlite:///x.db?name=bot", name="bot").name == "bot"
    with pytest.raises(ValueError, match="name"):
        SQLStore("sqlite:///x.db?name=bot", name="other")
    store = open_store("postgresql://u:pw@h:5433/db?name=bot&table_prefix=app_")
    assert isinstance(store, SQLStore)
    assert (store.name, store.table_prefix) == ("bot", "app_")
    assert "name" not in store._database.target.url.query
    assert "table_prefix" not in store._database.target.url.query


def test_constructor_does_no_io_and_validates_its_options() -> None:
    store = SQLStore("postgresql://u@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert store._database.engine is None
    bad_options: list[tuple[dict[str, Any], str]] = [
        ({"table_prefix": "x; drop"}, "table_prefix"),
        ({"retry": (-1.0,)}, "retry"),
        ({"timeout": 0}, "timeout"),
        ({"name": ""}, "name"),
    ]
    for bad, field in bad_options:
        with pytest.raises(ValueError, match=field):
            SQLStore("sqlite:///x.db", **bad)
    with pytest.raises(ValueError, match="sqlite, postgresql"):
        SQLStore("oracle://u@h/db")
    with pytest.raises(ValueError, match="not a database URL") as info:
        SQLStore(f"::not a url {PASSWORD}")
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("postgresql://u@127.0.0.1/test", "bot\x00"),  # PostgreSQL text cannot hold NUL
        ("postgresql://u@127.0.0.1/test?name=bot%00x", None),  # nor through the URL
        ("mariadb://u@127.0.0.1/test", "a\ud800b"),  # a lone surrogate encodes nowhere
        ("sqlite:///x.db", "two\nlines"),  # would split log lines
        ("sqlite:///x.db?name=tab%09", None),
        ("sqlite:///x.db", "x" * 256),  # VARCHAR(255)
        ("sqlite:///x.db", ""),
    ],
)
def test_bad_session_names_are_value_errors_at_construction(url: str, name: str | None) -> None:
    with pytest.raises(ValueError, match="SQLStore name must") as info:
        SQLStore(url, name=name)
    assert "\x00" not in str(info.value)  # shown escaped, on one line
    assert "\n" not in str(info.value)
    if name is None:
        with pytest.raises(ValueError, match="SQLStore name must"):
            open_store(url)


async def test_names_with_quotes_spaces_and_any_script_round_trip(
    make_store: Callable[..., SQLStore],
) -> None:
    names = ['it\'s a "bot" ; --', "ünïcode/日本語 🚀", "x" * 255, " padded "]
    datas = [sample(n) for n in range(len(names))]
    for name, data in zip(names, datas, strict=True):
        await make_store(name).save(data)
    for name, data in zip(names, datas, strict=True):
        assert await make_store(name).load() == data
        if name.strip() != name:  # the key is the exact name: no trimming
            assert await make_store(name.strip()).load() is None


def test_cli_errors_about_an_unreachable_database_name_the_store_once() -> None:
    url = "postgresql://nobody@127.0.0.1:1/test?name=bot"  # nothing listens on port 1
    shown = "postgresql://nobody@127.0.0.1:1/test#bot"
    for args in (
        ["check", url, "--api-id", "1", "--api-hash", "x" * 32],
        ["session", "export", url, "--string", "--stdout"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "resilient_tg.cli", *args],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 3, result.stderr
        assert result.stderr.decode().count(shown) == 1, result.stderr


def test_describe_shows_the_url_without_password_or_query() -> None:
    store = SQLStore(f"postgresql://alice:{PASSWORD}@db.example:5433/app?name=bot&ssl=require")
    assert store.describe() == "postgresql://alice@db.example:5433/app#bot"
    assert PASSWORD not in repr(store)
    assert SQLStore("sqlite:////var/lib/s.db").describe() == "sqlite:////var/lib/s.db#default"


async def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sessions.db"
    async with SQLStore(f"sqlite:///{path}") as store:
        await store.save(sample())
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


# Sessions ----------------------------------------------------------------------------


async def test_round_trip_keeps_every_field(make_store: Callable[..., SQLStore]) -> None:
    store = make_store()
    assert await store.load() is None
    data = sample(3)
    await store.save(data)
    assert await store.load() == data
    newer = sample(4)
    await store.save(newer)  # an upsert: the row is replaced
    assert await make_store().load() == newer
    await store.delete()
    assert await store.load() is None
    await store.delete()  # a no-op when there is nothing


async def test_many_named_sessions_in_one_database_are_independent(
    make_store: Callable[..., SQLStore],
) -> None:
    stores = [make_store(f"bot-{i}") for i in range(5)]
    datas = [sample(i) for i in range(5)]
    for store, data in zip(stores, datas, strict=True):
        await store.save(data)
    leases = [await store.acquire_lease(f"holder-{i}", 30) for i, store in enumerate(stores)]
    assert [lease.token for lease in leases] == [1] * 5
    await stores[2].delete()
    await stores[3].release_lease("holder-3")
    for i in range(5):
        fresh = make_store(f"bot-{i}")
        assert await fresh.load() == (None if i == 2 else datas[i])
        current = await fresh.current_lease()
        assert (
            (current is None)
            if i == 3
            else (current is not None and current.holder == f"holder-{i}")
        )


async def test_stores_made_by_session_share_one_pool_and_keep_their_own_rows(
    make_store: Callable[..., SQLStore],
) -> None:
    key = os.urandom(32)
    base = make_store("base", encryption_key=key)
    twins = [base.session(f"acct-{i}") for i in range(3)]
    datas = [sample(i) for i in range(3)]
    for i, twin in enumerate(twins):
        await twin.save(datas[i])
        await twin.acquire_lease(f"holder-{i}", 30)
    assert base._database.engine is not None
    assert all(twin._database is base._database for twin in twins)
    assert [twin.describe().rsplit("#", 1)[1] for twin in twins] == ["acct-0", "acct-1", "acct-2"]
    # Each row is sealed for its own name: read back through fresh stores with the key.
    for i in range(3):
        fresh = make_store(f"acct-{i}", encryption_key=key)
        assert await fresh.load() == datas[i]
        lease = await fresh.current_lease()
        assert lease is not None
        assert lease.holder == f"holder-{i}"
    # A twin's aclose leaves the shared pool alone; the owner's disposes it.
    await twins[0].aclose()
    assert base._database.engine is not None
    await base.aclose()
    assert base._database.engine is None
    assert await twins[1].load() == datas[1]  # used again: a new pool
    with pytest.raises(ValueError, match="name"):
        base.session("")


async def test_a_corrupt_row_is_a_session_corrupt_error_naming_the_store(
    make_store: Callable[..., SQLStore],
) -> None:
    store = make_store()
    await store.save(sample())
    table = sa.table(f"{store.table_prefix}sessions", sa.column("name"), sa.column("data"))
    async with raw_engine(store) as engine, engine.begin() as conn:
        await conn.execute(
            sa.update(table).where(table.c.name == store.name).values(data=b'{"format": trunc')
        )
    with pytest.raises(SessionCorruptError) as info:
        await store.load()
    assert info.value.store == store.describe()
    assert store.describe() in str(info.value)


async def test_a_newer_schema_version_is_refused_and_left_alone(
    make_store: Callable[..., SQLStore],
) -> None:
    store = make_store()
    await store.save(sample())
    async with raw_engine(store) as engine, engine.begin() as conn:
        await conn.execute(sa.text(f"UPDATE {store.table_prefix}schema SET version = 99"))
    later = make_store()
    with pytest.raises(SessionCorruptError, match="schema version 99") as info:
        await later.load()
    assert "upgrade resilient_tg" in str(info.value)
    async with raw_engine(store) as engine, engine.connect() as conn:
        version = await conn.scalar(sa.text(f"SELECT version FROM {store.table_prefix}schema"))
    assert version == 99


async def test_encryption_at_rest_hides_the_key_and_needs_the_key_to_read(
    make_store: Callable[..., SQLStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_bytes(32)
    auth_key = os.urandom(256)
    store = make_store(encryption_key=key)
    await store.save(sample(key=auth_key))
    table = sa.table(f"{store.table_prefix}sessions", sa.column("data"))
    async with raw_engine(store) as engine, engine.connect() as conn:
        blob = bytes(await conn.scalar(sa.select(table.c.data)))
    assert auth_key not in blob
    assert base64.b64encode(auth_key) not in blob
    assert b"10.0.0.1" not in blob
    assert key not in blob
    loaded = await store.load()
    assert loaded is not None
    assert loaded.auth_key == auth_key
    monkeypatch.setenv("RTG_TEST_KEY", key.hex())
    from_env = make_store(encryption_key_env="RTG_TEST_KEY")
    assert await from_env.load() == loaded
    with pytest.raises(SessionCorruptError, match="encrypted"):
        await make_store().load()
    with pytest.raises(SessionCorruptError, match="cannot be decrypted"):
        await make_store(encryption_key=secrets.token_bytes(32)).load()
    # The name is bound into the ciphertext: a blob copied to another session fails.
    async with raw_engine(store) as engine, engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO {store.table_prefix}sessions (name, data, updated_at) "
                "VALUES ('other', :data, 0)"
            ),
            {"data": blob},
        )
    with pytest.raises(SessionCorruptError, match="cannot be decrypted"):
        await make_store("other", encryption_key=key).load()


async def test_save_is_refused_once_another_holder_took_the_lease(
    make_store: Callable[..., SQLStore],
) -> None:
    ours, theirs = make_store(), make_store()
    first = await ours.acquire_lease("us", 0.3)
    await ours.save(sample(1))
    await wait_until_free(theirs)
    taken = await theirs.acquire_lease("them", 30)
    assert taken.token == first.token + 1
    with pytest.raises(LeaseLostError, match="refused"):
        await ours.save(sample(2))
    with pytest.raises(LeaseLostError):
        await ours.delete()
    with pytest.raises(LeaseLostError, match="now held by them"):
        await ours.renew_lease("us", 30)
    await theirs.save(sample(3))
    loaded = await theirs.load()
    assert loaded is not None
    assert loaded.port == 446
    await make_store().save(sample(4))  # a store that took no lease is not fenced


# Leases ------------------------------------------------------------------------------


async def wait_until_free(store: SQLStore, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while await store.current_lease() is not None:
        assert time.monotonic() < deadline, "the lease never expired"
        await sleep(0.05)


async def sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


async def test_a_live_lease_excludes_other_holders(make_store: Callable[..., SQLStore]) -> None:
    a, b = make_store(), make_store()
    lease = await a.acquire_lease("host-a:1:x", 30)
    assert lease.token == 1
    assert 29 < lease.remaining() <= 30
    with pytest.raises(SessionInUseError) as info:
        await b.acquire_lease("host-b:2:y", 30)
    assert info.value.holder == "host-a:1:x"
    assert info.value.expires_at is not None
    assert 25 < info.value.expires_at - time.time() <= 30
    assert info.value.store == b.describe()
    again = await a.acquire_lease("host-a:1:x", 30)  # the same holder: same term, same token
    assert again.token == 1
    renewed = await a.renew_lease("host-a:1:x", 60)
    assert renewed.token == 1
    assert renewed.remaining() > 55
    current = await b.current_lease()
    assert current is not None
    assert current.holder == "host-a:1:x"
    await b.release_lease("host-b:2:y")  # not ours: nothing happens
    assert await b.current_lease() is not None
    await a.release_lease("host-a:1:x")
    assert await b.current_lease() is None
    taken = await b.acquire_lease("host-b:2:y", 30)
    assert taken.token == 2  # tokens keep growing across releases
    with pytest.raises(LeaseLostError):
        await a.renew_lease("host-a:1:x", 30)


async def test_an_expired_lease_is_taken_over_with_a_new_token(
    make_store: Callable[..., SQLStore],
) -> None:
    a, b = make_store(), make_store()
    await a.acquire_lease("a", 0.3)
    await wait_until_free(b)
    assert (await b.acquire_lease("b", 30)).token == 2


async def test_a_lapsed_lease_nobody_took_can_still_be_renewed(
    make_store: Callable[..., SQLStore],
) -> None:
    a = make_store()
    await a.acquire_lease("a", 0.2)
    await wait_until_free(a)
    lease = await a.renew_lease("a", 30)
    assert lease.token == 1
    await a.save(sample())  # still the same term: the save is not fenced off


async def test_lease_expiry_uses_the_database_clock(
    make_store: Callable[..., SQLStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder whose machine clock runs an hour ahead does not steal a live lease."""
    import resilient_tg.stores._sql as sql_module

    a, b = make_store(), make_store()
    await a.acquire_lease("a", 30)

    class SkewedTime:
        @staticmethod
        def time() -> float:
            return time.time() + 3600.0

    monkeypatch.setattr(sql_module, "time", SkewedTime)
    with pytest.raises(SessionInUseError) as info:
        await b.acquire_lease("b", 30)
    # Reported on the local (skewed) clock, so "remaining" stays right on this machine.
    assert info.value.expires_at is not None
    assert 3600 + 25 < info.value.expires_at - time.time() <= 3600 + 30


# A raw Telethon client ---------------------------------------------------------------


async def test_a_raw_telethon_client_resumes_from_the_database_and_catches_up(
    make_store: Callable[..., SQLStore], mtproto_server: MTProtoTestServer
) -> None:
    """Logged in once; a new client built from the database alone is authorized and gets
    the message sent while no client was running."""
    server = mtproto_server
    alice = server.create_user("+15550001", "Alice")
    bob = server.create_user("+15550002", "Bob")
    session = await StoreSession.open(make_store("telethon"))
    session.set_dc(server.dc_id, server.host, server.port)
    async with telethon_client(server, session=session) as client:
        await login(client, server, bob)
    await session.aclose()

    await server.send_message(alice.id, bob.id, "sent while away")
    texts: list[str] = []
    resumed = await StoreSession.open(make_store("telethon"))  # a new store object
    async with telethon_client(server, session=resumed, catch_up=True) as client:
        client.add_event_handler(
            lambda event: texts.append(event.raw_text), events.NewMessage(incoming=True)
        )
        assert await client.is_user_authorized()
        assert (await client.get_me()).id == bob.id
        await asyncio.wait_for(client.catch_up(), STEP_TIMEOUT)
        await wait_until(lambda: "sent while away" in texts)
    await resumed.aclose()


# Processes ----------------------------------------------------------------------------


class Worker:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@contextlib.contextmanager
def workers(n: int, *args: str) -> Iterator[list[Worker]]:
    started = [Worker(*args[:4], f"worker-{i}", *args[4:]) for i in range(n)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def go(started: list[Worker]) -> list[str]:
    """Start every worker at once (after each said READY); their first answers."""
    ready = [w.line() for w in started]
    assert ready == ["READY"] * len(started), [
        (r, w.proc.stderr.read() if w.proc.stderr and w.proc.poll() is not None else "")
        for r, w in zip(ready, started, strict=True)
    ]
    for worker in started:
        worker.send("GO\n")
    return [w.line() for w in started]


@pytest.mark.timeout(60)
async def test_processes_racing_for_a_lease_one_wins_and_a_killed_holder_is_taken_over(
    backend: str, tmp_path: Path, make_store: Callable[..., SQLStore], prefix: str
) -> None:
    url = server_url(backend, tmp_path)
    observer = make_store("raced")
    await observer.load()  # the schema exists before the workers start
    with workers(3, "lease", url, prefix, "raced", "2.0") as started:
        answers = await _in_thread(go, started)
        winners = [a for a in answers if a.startswith("WON")]
        assert len(winners) == 1, answers
        assert sorted(a.split()[0] for a in answers) == ["INUSE", "INUSE", "WON"], answers
        winner = started[answers.index(winners[0])]
        token = int(winners[0].split()[1])
        holder = f"worker-{started.index(winner)}"
        assert all(a == f"INUSE {holder}" for a in answers if a != winners[0])
        winner.proc.kill()  # kill -9: no release
        winner.proc.wait(timeout=10)
        with pytest.raises(SessionInUseError):
            await observer.acquire_lease("observer", 30)
        await wait_until_free(observer)
        assert (await observer.acquire_lease("observer", 30)).token == token + 1


@pytest.mark.timeout(60)
async def test_processes_creating_the_schema_at_once_all_succeed(
    backend: str, tmp_path: Path, make_store: Callable[..., SQLStore], prefix: str
) -> None:
    url = server_url(backend, tmp_path)
    make_store()  # registers the tables for cleanup
    with workers(4, "schema", url, prefix, "s", "1") as started:
        answers = await _in_thread(go, started)
    assert answers == ["OK"] * 4
    async with raw_engine(make_store()) as engine, engine.connect() as conn:
        rows = (await conn.execute(sa.text(f"SELECT version FROM {prefix}schema"))).all()
    assert [tuple(r) for r in rows] == [(1,)]


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    import anyio

    with anyio.fail_after(45):
        return await anyio.to_thread.run_sync(fn, *args)


# Outages and secrets -------------------------------------------------------------------


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
@pytest.mark.timeout(60)
async def test_a_save_during_an_outage_is_kept_in_memory_and_lands_after_healing(
    backend: str,
    tmp_path: Path,
    make_store: Callable[..., SQLStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_tg")
    url = server_url(backend, tmp_path, password=PASSWORD)
    parsed = sa.make_url(url)
    assert parsed.host is not None
    assert parsed.port is not None
    async with FaultProxy(parsed.host, parsed.port) as proxy:
        store = make_store("outage", url=via_proxy(url, proxy.port), retry=(0.05, 0.1), timeout=3)
        session = await StoreSession.open(store, flush_interval=0.05)
        session.set_dc(2, "10.1.1.1", 443)
        session.auth_key = AuthKey(os.urandom(256))
        await session.flush()

        proxy.refuse(math.inf)  # no new connections ...
        proxy.reset()  # ... and the pooled ones die
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            await store.save(sample())
        assert time.monotonic() - started < 10  # a bounded retry, then the error
        assert store.describe() in str(info.value)

        new_key = os.urandom(256)
        session.auth_key = AuthKey(new_key)  # Telethon changes the key: an urgent write
        await wait_until(lambda: session.last_save_error is not None)
        assert session.dirty
        assert session.snapshot().auth_key == new_key

        proxy.heal()
        await wait_until(lambda: not session.dirty and session.last_save_error is None)
        direct = make_store("outage", url=url)
        loaded = await direct.load()
        assert loaded is not None
        assert loaded.auth_key == new_key
        await session.aclose()
    for text in (caplog.text, str(info.value), repr(info.value), repr(store)):
        assert PASSWORD not in text
        assert new_key.hex() not in text
        assert base64.b64encode(new_key).decode() not in text


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_pooled_connections_the_server_closed_are_replaced_without_a_retry(
    backend: str,
    tmp_path: Path,
    make_store: Callable[..., SQLStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL's pooled connections are not pinged (three round trips per checkout):
    one the server closed is known locally and replaced at checkout, so the next
    operation neither fails nor waits for a retry."""
    url = server_url(backend, tmp_path)
    parsed = sa.make_url(url)
    assert parsed.host is not None
    assert parsed.port is not None
    async with FaultProxy(parsed.host, parsed.port) as proxy:
        store = make_store("closed", url=via_proxy(url, proxy.port), retry=(5.0,), timeout=5)
        engine = await store._database.ready()
        pooled: list[Any] = []  # every connection the pool opens (asyncpg's)
        sa.event.listen(
            engine.sync_engine, "connect", lambda conn, _: pooled.append(conn.driver_connection)
        )
        await asyncio.gather(*(store.save(sample(i)) for i in range(3)))  # a few pooled
        assert pooled
        proxy.reset()  # the database side closes every pooled connection
        await wait_until(lambda: all(c.is_closed() for c in pooled))
        caplog.clear()
        started = time.monotonic()
        await store.save(sample(9))
        assert time.monotonic() - started < 5.0  # no retry (its delay is 5 s)
        assert "retrying" not in caplog.text
        loaded = await store.load()
        assert loaded is not None
        assert loaded.port == 452


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
async def test_a_database_that_does_not_answer_fails_within_the_bound(
    backend: str, tmp_path: Path, make_store: Callable[..., SQLStore]
) -> None:
    url = server_url(backend, tmp_path)
    parsed = sa.make_url(url)
    assert parsed.host is not None
    assert parsed.port is not None
    async with FaultProxy(parsed.host, parsed.port) as proxy:
        store = make_store("silent", url=via_proxy(url, proxy.port), retry=(0.05,), timeout=1.0)
        await store.save(sample())  # connected, schema created
        proxy.blackhole()  # the pooled link and every new one go silent
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="after 2 attempt"):
            await store.save(sample())
        assert time.monotonic() - started < 2 * 1.0 + 0.05 + 1.0
        proxy.heal()
        await store.save(sample(7))  # and it recovers once the database answers again
        loaded = await store.load()
        assert loaded is not None
        assert loaded.port == 450


async def test_errors_reprs_and_logs_never_show_the_password_or_key(
    backend: str,
    tmp_path: Path,
    make_store: Callable[..., SQLStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = secrets.token_bytes(32)
    url = server_url(backend, tmp_path, password=PASSWORD)
    a = make_store("secret", url=url, encryption_key=key)
    b = make_store("secret", url=url, encryption_key=key)
    data = sample()
    await a.save(data)
    await a.acquire_lease("a", 30)
    texts = [repr(a), a.describe(), str(await b.current_lease())]
    with pytest.raises(SessionInUseError) as in_use:
        await b.acquire_lease("b", 30)
    texts += [str(in_use.value), repr(in_use.value)]
    if backend != "sqlite":  # nothing listens on port 1
        unreachable = make_store("secret", url=via_proxy(url, 1), retry=(0.01,), timeout=2)
        with pytest.raises(ConnectionError) as down:
            await unreachable.save(data)
        texts += [str(down.value), repr(down.value), str(down.value.__cause__)]
    texts.append(caplog.text)
    secrets_ = [PASSWORD, key.hex(), base64.b64encode(key).decode()]
    assert data.auth_key is not None
    secrets_ += [data.auth_key.hex(), base64.b64encode(data.auth_key).decode()]
    for text in texts:
        for secret in secrets_:
            assert secret not in text


# The shipped contract suite ----------------------------------------------------------

CONTRACT_KEY = secrets.token_bytes(32)


class TestSQLStoreContract(StoreContract):
    """The suite every store passes, on each backend, with a password and encryption on."""

    @pytest.fixture
    async def store(
        self, backend: str, tmp_path: Path, make_store: Callable[..., SQLStore]
    ) -> SQLStore:
        url = server_url(backend, tmp_path, password=PASSWORD)
        return make_store("contract", url=url, encryption_key=CONTRACT_KEY)

    @pytest.fixture
    def store_secrets(self) -> list[bytes | str]:
        return [PASSWORD, CONTRACT_KEY]


async def test_a_transaction_left_idle_by_a_stopped_process_stops_blocking_others() -> None:
    """A worker paused (SIGSTOP) inside a transaction holds its row locks; PostgreSQL
    ends its session after twice the store's timeout, so another writer of those rows
    goes on instead of waiting for a process that may never run again."""
    table = f"idle_tx_{RUN}"
    paused_engine = make_engine(
        target(read_options(PG_URL, name=None, table_prefix=None, key_env=None)), 0.5
    )
    other_engine = make_engine(
        target(read_options(PG_URL, name=None, table_prefix=None, key_env=None)), 30.0
    )
    assert idle_limit_ms(0.5) == 1000
    try:
        async with other_engine.begin() as conn:
            await conn.execute(sa.text(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"))
            await conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0)"))
        paused = await paused_engine.connect()
        await paused.begin()
        await paused.execute(sa.text(f"UPDATE {table} SET v = 1 WHERE id = 1"))  # row locked
        # ...and the process stops here: no COMMIT, no ROLLBACK, the socket stays open.
        started = time.monotonic()
        with anyio.fail_after(15):  # without the server's limit: blocked for good
            async with other_engine.begin() as conn:
                await conn.execute(sa.text(f"UPDATE {table} SET v = 2 WHERE id = 1"))
        waited = time.monotonic() - started
        assert waited >= 0.9, waited  # the lock was really held until the session ended
        async with other_engine.connect() as conn:
            assert await conn.scalar(sa.text(f"SELECT v FROM {table} WHERE id = 1")) == 2
        with contextlib.suppress(Exception):
            await paused.close()
    finally:
        async with other_engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        await paused_engine.dispose()
        await other_engine.dispose()
