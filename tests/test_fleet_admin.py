"""FleetAdmin against real SQLite, the local PostgreSQL and the local MariaDB.

Nothing skips: a database that is not running fails these tests. Every test works in
its own tables (a unique prefix) and drops them afterwards.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from telethon.crypto import AuthKey
from telethon.sessions import StringSession

from resilient_tg import LeaseLostError, SessionCorruptError, SessionInUseError
from resilient_tg.fleet import (
    AccountExistsError,
    AccountSettings,
    AccountStatus,
    FleetAdmin,
    UnknownAccountError,
)
from resilient_tg.fleet._admin import REMOVED_HOLDER
from resilient_tg.fleet._db import fleet_database
from resilient_tg.stores import FileStore, SessionData, SQLStore

from .test_store_sql import BACKENDS, RUN, _counter, raw_engine, server_url
from .test_store_sql import sample as _sample

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(bytes(range(32))).decode()
API_HASH = "0123456789abcdef0123456789abcdef"
PROXY = "socks5://proxyuser:Pr0xy-Secret@127.0.0.1:1080"
TABLES = ("fleet_accounts", "fleet_workers", "leases", "sessions", "schema")


def sample(n: int) -> SessionData:
    """A logged-in session, the same for the same ``n``."""
    return _sample(n, key=bytes([n + 1]) * 256)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> str:
    return server_url(backend, tmp_path)


@pytest.fixture
async def prefix(url: str) -> AsyncIterator[str]:
    """A table prefix of this test's own; its tables are dropped afterwards."""
    prefix = f"rtgf_{RUN}_{next(_counter)}_"
    yield prefix
    store = SQLStore(url, table_prefix=prefix)
    async with raw_engine(store) as engine, engine.begin() as conn:
        for table in TABLES:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{table}"))


@pytest.fixture
async def make_admin(url: str, prefix: str) -> AsyncIterator[Callable[..., FleetAdmin]]:
    admins: list[FleetAdmin] = []

    def make(**kwargs: Any) -> FleetAdmin:
        admin = FleetAdmin(url, table_prefix=prefix, **kwargs)
        admins.append(admin)
        return admin

    yield make
    for admin in admins:
        await admin.aclose()


@pytest.fixture
async def stores(url: str, prefix: str) -> AsyncIterator[Callable[..., SQLStore]]:
    """SQLStores on the fleet's tables, as a worker would hold them."""
    made: list[SQLStore] = []

    def make(name: str, **kwargs: Any) -> SQLStore:
        store = SQLStore(url, name=name, table_prefix=prefix, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_added_accounts_are_listed_with_their_status_and_settings_sealed(
    make_admin: Callable[..., FleetAdmin], stores: Callable[..., SQLStore]
) -> None:
    settings = AccountSettings(api_id=777, api_hash=API_HASH, proxy=PROXY)
    async with make_admin(encryption_key=KEY) as admin:
        await admin.add("alice", sample(1), settings=settings)
        await admin.add("bob", None, status=AccountStatus.PENDING, reason="login under way")
        accounts = {a.name: a for a in await admin.accounts()}
        assert set(accounts) == {"alice", "bob"}
        assert accounts["alice"].status is AccountStatus.ACTIVE
        assert accounts["alice"].has_session
        assert accounts["alice"].holder == ""
        assert accounts["bob"].status is AccountStatus.PENDING
        assert accounts["bob"].reason == "login under way"
        assert not accounts["bob"].has_session
        assert await admin.settings("alice") == settings
        assert await admin.settings("bob") == AccountSettings()
        # The session is sealed for its name: the worker's store (same key) reads it.
        assert await stores("alice", encryption_key=KEY).load() == sample(1)
        async with raw_engine(admin._store) as engine, engine.connect() as conn:
            blobs = (
                await conn.execute(
                    sa.text(f"SELECT settings FROM {admin.table_prefix}fleet_accounts")
                )
            ).scalars()
            raw = b"".join(bytes(b) for b in blobs if b is not None)
        assert raw
        assert API_HASH.encode() not in raw
        assert b"Pr0xy-Secret" not in raw
        for text in (repr(admin), repr(settings), repr(accounts["alice"])):
            assert API_HASH not in text
            assert "Pr0xy-Secret" not in text


async def test_an_existing_name_is_refused_unless_replaced_and_replacing_fences_the_holder(
    make_admin: Callable[..., FleetAdmin], stores: Callable[..., SQLStore]
) -> None:
    async with make_admin() as admin:
        await admin.add("carol", sample(1))
        with pytest.raises(AccountExistsError, match="carol"):
            await admin.add("carol", sample(2))
        worker = stores("carol")
        await worker.acquire_lease("worker-1", 30.0)
        await admin.add("carol", sample(3), replace=True)
        assert await worker.load() == sample(3)
        with pytest.raises(LeaseLostError):
            await worker.save(sample(4))
        # A session written by other means (no account row) counts as taken too.
        await stores("dave").save(sample(5))
        with pytest.raises(AccountExistsError):
            await admin.add("dave", None)


@pytest.mark.parametrize("name", ["", "bad\nname", "x" * 256])
async def test_bad_names_are_refused_before_any_write(
    make_admin: Callable[..., FleetAdmin], name: str
) -> None:
    async with make_admin() as admin:
        with pytest.raises(ValueError, match="name"):
            await admin.add(name, sample(1))
        assert await admin.accounts() == []


async def test_unknown_accounts_are_named_in_the_error(
    make_admin: Callable[..., FleetAdmin],
) -> None:
    async with make_admin() as admin:
        for call in (
            admin.remove("ghost"),
            admin.set_status("ghost", AccountStatus.DISABLED),
            admin.settings("ghost"),
            admin.set_settings("ghost", AccountSettings()),
            admin.account("ghost"),
        ):
            with pytest.raises(UnknownAccountError, match="no account 'ghost'"):
                await call
        assert await admin.accounts() == []


async def test_statuses_change_and_an_auth_lost_account_can_be_enabled_again(
    make_admin: Callable[..., FleetAdmin], stores: Callable[..., SQLStore]
) -> None:
    async with make_admin() as admin:
        await admin.add("erin", sample(1))
        await admin.set_status("erin", AccountStatus.AUTH_LOST, "AUTH_KEY_UNREGISTERED")
        info = await admin.account("erin")
        assert (info.status, info.reason) == (AccountStatus.AUTH_LOST, "AUTH_KEY_UNREGISTERED")
        await admin.set_status("erin", AccountStatus.ACTIVE)
        assert (await admin.account("erin")).status is AccountStatus.ACTIVE
        # A session without an account row gets one.
        await stores("frank").save(sample(2))
        assert (await admin.account("frank")).status is AccountStatus.ACTIVE
        await admin.set_status("frank", AccountStatus.DISABLED, "by the operator")
        assert (await admin.account("frank")).status is AccountStatus.DISABLED
        await admin.set_settings("frank", AccountSettings(proxy=PROXY))
        assert (await admin.settings("frank")).proxy == PROXY
        assert (await admin.account("frank")).status is AccountStatus.DISABLED


async def test_encrypted_settings_need_the_key(make_admin: Callable[..., FleetAdmin]) -> None:
    async with make_admin(encryption_key=KEY) as admin:
        await admin.add("grace", None, settings=AccountSettings(api_id=1, api_hash=API_HASH))
    async with make_admin() as keyless:
        with pytest.raises(SessionCorruptError, match="encryption key") as info:
            await keyless.settings("grace")
        assert API_HASH not in str(info.value)


async def test_remove_deletes_the_rows_and_fences_a_worker_holding_the_lease(
    make_admin: Callable[..., FleetAdmin], stores: Callable[..., SQLStore]
) -> None:
    async with make_admin() as admin:
        await admin.add("heidi", sample(1), settings=AccountSettings(proxy=PROXY))
        worker = stores("heidi")
        await worker.acquire_lease("worker-1", 30.0)
        await worker.save(sample(2))
        assert (await admin.account("heidi")).holder == "worker-1"
        await admin.remove("heidi")
        assert await admin.accounts() == []
        assert await worker.load() is None
        # The lease is left to a tombstone: the worker cannot take it back meanwhile.
        tombstone = await worker.current_lease()
        assert tombstone is not None
        assert tombstone.holder == REMOVED_HOLDER
        with pytest.raises(LeaseLostError):
            await worker.save(sample(3))
        with pytest.raises(LeaseLostError):
            await worker.renew_lease("worker-1", 30.0)
        with pytest.raises(SessionInUseError):
            await worker.acquire_lease("worker-1", 30.0)
        assert await worker.load() is None  # the refused save wrote nothing
        with pytest.raises(UnknownAccountError):
            await admin.remove("heidi")


async def test_import_from_a_file_a_string_a_store_and_another_database(
    make_admin: Callable[..., FleetAdmin],
    stores: Callable[..., SQLStore],
    tmp_path: Path,
    prefix: str,
) -> None:
    path = tmp_path / "ivan.json"
    await FileStore(path).save(sample(1))
    string = StringSession()
    string.set_dc(2, "10.0.0.9", 443)
    string.auth_key = AuthKey(data=os.urandom(256))
    other = f"sqlite:///{tmp_path}/other.db?name=judy"
    async with SQLStore(other) as other_store:
        await other_store.save(sample(3))
    async with make_admin(encryption_key=KEY) as admin:
        assert await admin.import_session("ivan", str(path)) == sample(1)
        assert await admin.import_session("ivan2", FileStore(path)) == sample(1)
        await admin.import_session("str", "session-string:" + string.save())
        assert await admin.import_session("judy", other) == sample(3)
        assert await stores("ivan", encryption_key=KEY).load() == sample(1)
        assert await stores("judy", encryption_key=KEY).load() == sample(3)
        loaded = await stores("str", encryption_key=KEY).load()
        assert loaded is not None
        assert loaded.auth_key == string.auth_key.key
        assert {a.name for a in await admin.accounts()} == {"ivan", "ivan2", "str", "judy"}
        # The sources are left as they were.
        assert await FileStore(path).load() == sample(1)
        async with SQLStore(other) as other_store:
            assert await other_store.load() == sample(3)


async def test_a_failed_import_writes_nothing(
    make_admin: Callable[..., FleetAdmin], tmp_path: Path
) -> None:
    keyless = tmp_path / "nokey.json"
    await FileStore(keyless).save(SessionData(dc_id=2, server_address="10.0.0.1", port=443))
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"{not json")
    async with make_admin() as admin:
        await admin.add("kept", sample(1))
        with pytest.raises(FileNotFoundError):
            await admin.import_session("a", str(tmp_path / "missing.json"))
        with pytest.raises(SessionCorruptError, match="without an auth key"):
            await admin.import_session("a", str(keyless))
        with pytest.raises(SessionCorruptError):
            await admin.import_session("a", str(garbage))
        with pytest.raises(SessionCorruptError, match="not a valid Telethon session string"):
            await admin.import_session("a", "session-string:1abc")
        with pytest.raises(SessionCorruptError, match="holds no session"):
            await admin.import_session("a", f"sqlite:///{tmp_path}/empty.db")
        with pytest.raises(AccountExistsError):
            await admin.import_session("kept", FileStore(tmp_path / "x.json"))
        await FileStore(tmp_path / "y.json").save(sample(2))
        with pytest.raises(AccountExistsError):
            await admin.import_session("kept", str(tmp_path / "y.json"))
        assert [a.name for a in await admin.accounts()] == ["kept"]
        assert await admin.store("kept").load() == sample(1)


async def test_workers_and_balance_come_from_heartbeats_and_leases(
    make_admin: Callable[..., FleetAdmin], stores: Callable[..., SQLStore]
) -> None:
    async with make_admin() as admin:
        for n in range(5):
            await admin.add(f"acct{n}", sample(n))
        await admin.add("parked", sample(9), status=AccountStatus.DISABLED)
        fleet = fleet_database(admin._store)
        for n in range(4):
            await stores(f"acct{n}").acquire_lease("w1", 30.0)
        await fleet.heartbeat(
            "w1", host="h1", pid=11, started_at=0.0, capacity=None, running=4, draining=False
        )
        await fleet.heartbeat(
            "w2", host="h2", pid=22, started_at=0.0, capacity=10, running=0, draining=False
        )
        workers = await admin.workers()
        assert [(w.worker_id, w.host, w.pid, w.running, w.capacity) for w in workers] == [
            ("w1", "h1", 11, 4, None),
            ("w2", "h2", 22, 0, 10),
        ]
        assert all(0 <= w.heartbeat_age < 30 for w in workers)
        balance = await admin.balance()
        assert balance.active == 5
        assert balance.unclaimed == 1
        assert [(s.worker_id, s.running, s.target) for s in balance.workers] == [
            ("w1", 4, 3),
            ("w2", 0, 3),
        ]
        assert balance.moves == 1
        assert not balance.balanced
        info = await admin.account("acct0")
        assert info.holder == "w1"
        assert 0 < info.lease_left <= 30
        await fleet.heartbeat(
            "w2", host="h2", pid=22, started_at=0.0, capacity=10, running=2, draining=False
        )
        await fleet.heartbeat(
            "w1", host="h1", pid=11, started_at=0.0, capacity=None, running=3, draining=False
        )
        assert (await admin.balance()).balanced
    async with make_admin(worker_ttl=1e-6) as strict:
        assert await strict.workers() == []
        assert not (await strict.balance()).balanced  # active accounts, nobody to run them


async def test_a_closed_admin_refuses_work(make_admin: Callable[..., FleetAdmin]) -> None:
    admin = make_admin()
    async with admin:
        await admin.accounts()
    with pytest.raises(RuntimeError, match="closed"):
        await admin.accounts()
    with pytest.raises(RuntimeError, match="closed"):
        async with admin:
            pass


async def test_an_unreachable_database_is_named_without_its_password() -> None:
    admin = FleetAdmin("postgresql://user:S3cret-pw@127.0.0.1:1/nodb", retry=(), timeout=2.0)
    async with admin:
        with pytest.raises(ConnectionError) as info:
            await admin.accounts()
    message = str(info.value)
    assert "127.0.0.1:1/nodb" in message
    assert "S3cret-pw" not in message
