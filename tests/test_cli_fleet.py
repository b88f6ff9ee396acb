"""`resilient-tg fleet` as operators run it: real processes on the real PostgreSQL (and
SQLite), logins against the `mtproto_server` fixture with answers piped on stdin."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from anyio.abc import Process

from resilient_tg import LeaseLostError, ResilientClient
from resilient_tg.cache import RedisCacheBackend
from resilient_tg.fleet import AccountSettings, AccountStatus, FleetAdmin
from resilient_tg.fleet._db import fleet_database
from resilient_tg.stores import FileStore, SQLStore
from resilient_tg.testing import MTProtoTestServer
from resilient_tg.testing.cache_contract import USER, message

from .conftest import STEP_TIMEOUT, wait_until
from .test_cache_redis import REDIS_URL, delete_prefix
from .test_store_sql import PG_URL, RUN, _counter, raw_engine, sample

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(bytes(range(1, 33))).decode()
TABLES = ("fleet_accounts", "fleet_workers", "leases", "sessions", "schema")
PASSWORD = "2fa: correct horse battery"
PROCESS_TIMEOUT = 60.0


@pytest.fixture
def db() -> str:
    """PostgreSQL: the commands are the same on every backend, and FleetAdmin, under
    them, is tested on all three (test_fleet_admin.py); each case here is a process."""
    return PG_URL


@pytest.fixture
async def prefix(db: str) -> AsyncIterator[str]:
    prefix = f"rtgc_{RUN}_{next(_counter)}_"
    yield prefix
    async with raw_engine(SQLStore(db, table_prefix=prefix)) as engine, engine.begin() as conn:
        for table in TABLES:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{table}"))


@pytest.fixture
async def admin(db: str, prefix: str) -> AsyncIterator[FleetAdmin]:
    """The test's own view of the fleet (with the fleet's key)."""
    async with FleetAdmin(db, table_prefix=prefix, encryption_key=KEY) as admin:
        yield admin


@pytest.fixture
def pem(mtproto_server: MTProtoTestServer, tmp_path: Path) -> Path:
    path = tmp_path / "server_key.pem"
    path.write_text(mtproto_server.public_key_pem)
    return path


def fleet_env(db: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: the database from $RESILIENT_TG_FLEET_DB, the
    key from $FLEET_KEY; no TG_API_* unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_API_")}
    return {**env, "RESILIENT_TG_FLEET_DB": db, "FLEET_KEY": KEY, **extra}


def cli(prefix: str, *args: str) -> list[str]:
    action, *rest = args
    return [
        sys.executable,
        "-m",
        "resilient_tg.cli",
        "fleet",
        action,
        "--table-prefix",
        prefix,
        "--key-env",
        "FLEET_KEY",
        *rest,
    ]


async def run(
    prefix: str, *args: str, env: Mapping[str, str], stdin: str = ""
) -> tuple[int, str, str]:
    with anyio.fail_after(PROCESS_TIMEOUT):
        result = await anyio.run_process(
            cli(prefix, *args), input=stdin.encode(), env=dict(env), check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def finish(process: Process, answers: str = "") -> tuple[int, str, str]:
    """Send the answers, close stdin, and collect the outputs and the exit code."""
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()

    async def drain(stream: Any, into: bytearray) -> None:
        async for chunk in stream:
            into.extend(chunk)

    with anyio.fail_after(PROCESS_TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stdout, out)
            tg.start_soon(drain, process.stderr, err)
            if answers:
                await process.stdin.send(answers.encode())
            await process.stdin.aclose()
        code = await process.wait()
    return code, out.decode(), err.decode()


def has_code(server: MTProtoTestServer, phone: str) -> bool:
    try:
        server.login_code(phone)
    except LookupError:
        return False
    return True


async def session_is_authorized(server: MTProtoTestServer, db: str, prefix: str, name: str) -> bool:
    store = SQLStore(db, name=name, table_prefix=prefix, encryption_key=KEY)
    async with store, ResilientClient(store, server.api_id, server.api_hash) as client:
        await client.wait_connected(STEP_TIMEOUT)
        return client.health().authorized


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in (KEY, *secrets):
        assert secret not in text


# fleet add: logins --------------------------------------------------------------------


async def test_add_logs_in_with_code_and_2fa_pending_until_it_succeeded(
    mtproto_server: MTProtoTestServer, admin: FleetAdmin, db: str, prefix: str, pem: Path
) -> None:
    user = mtproto_server.create_user("+15550201", "Alice")
    mtproto_server.set_password(user.id, PASSWORD)
    env = fleet_env(
        db, prefix, TG_API_ID=str(mtproto_server.api_id), TG_API_HASH=mtproto_server.api_hash
    )
    args = ["--phone", user.phone, "--test-server", f"{mtproto_server.host}:{mtproto_server.port}"]
    process = await anyio.open_process(
        cli(prefix, "add", "alice", *args, "--test-server-key", str(pem)), env=env
    )
    async with process:
        await wait_until(lambda: has_code(mtproto_server, user.phone), PROCESS_TIMEOUT)
        # While the login waits for its code, the account is parked as pending.
        info = await admin.account("alice")
        assert info.status is AccountStatus.PENDING
        assert "login under way" in info.reason
        code = mtproto_server.login_code(user.phone)
        status, out, err = await finish(process, f"{code}\n{PASSWORD}\n")
    assert status == 0, err
    assert "logged in as Alice" in out
    assert "'alice' is active" in out
    info = await admin.account("alice")
    assert info.status is AccountStatus.ACTIVE
    assert info.reason == ""
    assert await session_is_authorized(mtproto_server, db, prefix, "alice")
    assert_no_secrets(out + err, PASSWORD, mtproto_server.api_hash)


async def test_add_logs_in_a_bot_with_its_own_app_from_a_file_and_the_token_from_env(
    mtproto_server: MTProtoTestServer,
    admin: FleetAdmin,
    db: str,
    prefix: str,
    pem: Path,
    tmp_path: Path,
) -> None:
    """No TG_API_* in the environment: the account's own api_id/api_hash is used, and
    kept (sealed) as its settings."""
    bot = mtproto_server.create_bot("fleet_bot")
    hash_file = tmp_path / "api_hash"
    hash_file.write_text(mtproto_server.api_hash + "\n")
    env = fleet_env(db, prefix, BOT_TOKEN=bot.token)
    status, out, err = await run(
        prefix,
        "add",
        "bot-1",
        "--bot-token-env",
        "BOT_TOKEN",
        "--api-id",
        str(mtproto_server.api_id),
        "--api-hash-file",
        str(hash_file),
        "--test-server",
        f"{mtproto_server.host}:{mtproto_server.port}",
        "--test-server-key",
        str(pem),
        env=env,
    )
    assert status == 0, err
    assert "logged in as bot fleet_bot" in out
    assert (await admin.account("bot-1")).status is AccountStatus.ACTIVE
    settings = await admin.settings("bot-1")
    assert (settings.api_id, settings.api_hash) == (mtproto_server.api_id, mtproto_server.api_hash)
    assert await session_is_authorized(mtproto_server, db, prefix, "bot-1")
    assert_no_secrets(out + err, bot.token, mtproto_server.api_hash)


async def test_a_failed_login_stays_pending_with_its_reason_and_a_rerun_resumes_it(
    mtproto_server: MTProtoTestServer, admin: FleetAdmin, db: str, prefix: str, pem: Path
) -> None:
    bot = mtproto_server.create_bot("resume_bot")
    wrong = "123456:wrong-token-never-shown"
    env = fleet_env(
        db, prefix, TG_API_ID=str(mtproto_server.api_id), TG_API_HASH=mtproto_server.api_hash
    )
    server = ["--test-server", f"{mtproto_server.host}:{mtproto_server.port}"]
    server += ["--test-server-key", str(pem)]
    status, out, err = await run(prefix, "add", "bot-2", "--bot", *server, env=env, stdin=wrong)
    assert status == 4, err
    assert "bot token was refused" in err
    info = await admin.account("bot-2")
    assert info.status is AccountStatus.PENDING
    assert "login failed" in info.reason
    assert "bot token was refused" in info.reason
    assert_no_secrets(out + err + info.reason, wrong, mtproto_server.api_hash)

    status, out, err = await run(prefix, "add", "bot-2", "--bot", *server, env=env, stdin=bot.token)
    assert status == 0, err
    assert "Resuming the login of the pending account 'bot-2'" in err
    assert (await admin.account("bot-2")).status is AccountStatus.ACTIVE
    # An active account is not logged in again over itself.
    status, _, err = await run(prefix, "add", "bot-2", "--bot", *server, env=env, stdin=bot.token)
    assert status == 3
    assert "already has an account 'bot-2' (active)" in err


# fleet add --import, status ------------------------------------------------------------


async def test_import_from_a_filestore_and_status_json(
    admin: FleetAdmin, db: str, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "old.json"
    await FileStore(path).save(sample(1, key=bytes([7]) * 256))
    env = fleet_env(db, prefix)
    status, out, err = await run(prefix, "add", "old", "--import", str(path), env=env)
    assert status == 0, err
    assert f"from {path} as account 'old' (active)" in out
    assert await admin.store("old").load() == await FileStore(path).load()
    await admin.add("parked", None, status=AccountStatus.DISABLED, reason="moving numbers")
    await admin.store("old").acquire_lease("worker-a", 30.0)
    await fleet_database(admin._store).heartbeat(
        "worker-a", host="h1", pid=4242, started_at=0.0, capacity=50, running=1, draining=False
    )

    status, out, err = await run(prefix, "status", "--json", env=env)
    assert status == 0, err
    doc = json.loads(out)
    assert doc["counts"] == {
        "pending": 0,
        "active": 1,
        "disabled": 1,
        "auth_lost": 0,
        "rejected": 0,
    }
    assert [(w["worker_id"], w["running"], w["share"], w["capacity"]) for w in doc["workers"]] == [
        ("worker-a", 1, 1, 50)
    ]
    accounts = {a["name"]: a for a in doc["accounts"]}
    assert accounts["old"]["holder"] == "worker-a"
    assert accounts["parked"]["status"] == "disabled"
    assert accounts["parked"]["reason"] == "moving numbers"
    assert doc["balance"]["balanced"] is True

    status, out, err = await run(prefix, "status", env=env)
    assert status == 0, err
    assert "workers: 1 live" in out
    assert "accounts: 2 (1 active, 1 disabled)" in out
    assert "moving numbers" in out
    assert_no_secrets(out + err)


async def test_import_a_session_string_from_stdin_with_a_proxy_from_a_file(
    admin: FleetAdmin, db: str, prefix: str, tmp_path: Path
) -> None:
    from telethon.crypto import AuthKey
    from telethon.sessions import StringSession

    string = StringSession()
    string.set_dc(2, "10.1.2.3", 443)
    string.auth_key = AuthKey(data=bytes([9]) * 256)
    proxy = "socks5://user:Pr0xy-pw-never-shown@10.0.0.1:1080"
    proxy_file = tmp_path / "proxy"
    proxy_file.write_text(proxy)
    text = string.save()
    env = fleet_env(db, prefix)
    status, out, err = await run(
        prefix,
        "add",
        "s",
        "--string-stdin",
        "--proxy-file",
        str(proxy_file),
        "--disabled",
        env=env,
        stdin=text + "\n",
    )
    assert status == 0, err
    assert (await admin.account("s")).status is AccountStatus.DISABLED
    assert await admin.settings("s") == AccountSettings(proxy=proxy)
    assert_no_secrets(out + err, text, "Pr0xy-pw-never-shown")
    # A session string on the command line is refused (others can read it there).
    status, _, err = await run(prefix, "add", "t", "--import", "session-string:" + text, env=env)
    assert status == 2
    assert "visible to other users" in err
    assert_no_secrets(err, text)


# remove, disable, enable ---------------------------------------------------------------


async def test_remove_fences_a_store_that_holds_the_lease(
    admin: FleetAdmin, db: str, prefix: str
) -> None:
    await admin.add("gone", sample(2, key=bytes([2]) * 256))
    worker = SQLStore(db, name="gone", table_prefix=prefix, encryption_key=KEY)
    async with worker:
        await worker.acquire_lease("worker-b", 30.0)
        env = fleet_env(db, prefix)
        # Without --yes and without an answer: nothing is removed.
        status, _, err = await run(prefix, "remove", "gone", env=env)
        assert status == 2
        assert "pass --yes" in err
        status, _, err = await run(prefix, "remove", "gone", env=env, stdin="n\n")
        assert status == 2
        assert (await admin.account("gone")).holder == "worker-b"

        status, out, err = await run(prefix, "remove", "gone", env=env, stdin="y\n")
        assert status == 0, err
        assert "removed the account 'gone'" in out
        assert "worker-b was running it" in err
        with pytest.raises(LeaseLostError):
            await worker.save(sample(3))
        with pytest.raises(LeaseLostError):
            await worker.renew_lease("worker-b", 30.0)
        assert await admin.accounts() == []

    status, _, err = await run(prefix, "remove", "gone", "--yes", env=env)
    assert status == 3
    assert "no account 'gone'" in err


async def test_remove_with_cache_purges_the_accounts_cached_messages(
    admin: FleetAdmin, db: str, prefix: str
) -> None:
    await admin.add("gone", sample(2, key=bytes([2]) * 256))
    cache_prefix = f"rtgcli:{os.getpid()}:{next(_counter)}"
    backend = RedisCacheBackend(REDIS_URL, prefix=cache_prefix)
    try:
        await backend.put_messages("gone", [message(USER, 1)])
        await backend.put_messages("kept", [message(USER, 1)])
        env = fleet_env(db, prefix)
        args = ("remove", "gone", "--yes", "--cache", REDIS_URL, "--cache-prefix", cache_prefix)
        status, out, err = await run(prefix, *args, env=env)
        assert status == 0, err
        assert f"purged its message cache in {backend.describe()}" in out
        assert await backend.chats("gone") == []
        assert await backend.chats("kept") == [USER]
    finally:
        await backend.aclose()
        await delete_prefix(cache_prefix)


async def test_disable_and_enable_change_the_status_an_auth_lost_account_included(
    admin: FleetAdmin, db: str, prefix: str
) -> None:
    await admin.add("acct", sample(4, key=bytes([4]) * 256))
    env = fleet_env(db, prefix)
    status, out, err = await run(prefix, "disable", "acct", "--reason", "maintenance", env=env)
    assert status == 0, err
    assert "active -> disabled" in out
    info = await admin.account("acct")
    assert (info.status, info.reason) == (AccountStatus.DISABLED, "maintenance")
    await admin.set_status("acct", AccountStatus.AUTH_LOST, "AUTH_KEY_UNREGISTERED")
    status, out, err = await run(prefix, "enable", "acct", env=env)
    assert status == 0, err
    assert "auth_lost -> active" in out
    assert (await admin.account("acct")).status is AccountStatus.ACTIVE
    status, _, err = await run(prefix, "enable", "nobody", env=env)
    assert status == 3
    assert "no account 'nobody'" in err


# rebalance -----------------------------------------------------------------------------


async def test_rebalance_waits_until_every_worker_is_within_one_of_its_share(
    admin: FleetAdmin, db: str, prefix: str
) -> None:
    for n in range(4):
        await admin.add(f"a{n}", sample(n, key=bytes([n + 1]) * 256))
    fleet = fleet_database(admin._store)

    async def beat(worker: str, running: int) -> None:
        await fleet.heartbeat(
            worker, host="h", pid=1, started_at=0.0, capacity=None, running=running, draining=False
        )

    await beat("w1", 4)
    await beat("w2", 0)
    env = fleet_env(db, prefix)
    status, out, err = await run(prefix, "rebalance", env=env)
    assert status == 0, err  # without --wait it only reports
    assert "moves still to come: 2; not balanced" in out
    status, out, err = await run(prefix, "rebalance", "--wait", "0", env=env)
    assert status == 1
    assert "not balanced after 0s" in err

    process = await anyio.open_process(cli(prefix, "rebalance", "--wait", "60"), env=env)
    async with process:
        assert process.stdout is not None
        seen = b""
        with anyio.fail_after(PROCESS_TIMEOUT):
            while b"not balanced" not in seen:
                seen += await process.stdout.receive()
        await beat("w1", 2)
        await beat("w2", 2)
        status, out, err = await finish(process)
    assert status == 0, err
    assert "moves still to come: 0; balanced" in out


# errors --------------------------------------------------------------------------------


async def test_errors_name_what_is_wrong_without_secrets(
    admin: FleetAdmin, db: str, prefix: str
) -> None:
    env = fleet_env(db, prefix)
    no_db = {k: v for k, v in env.items() if k != "RESILIENT_TG_FLEET_DB"}
    status, _, err = await run(prefix, "status", env=no_db)
    assert status == 2
    assert "--db URL or $RESILIENT_TG_FLEET_DB" in err

    unreachable = "postgresql://user:S3cret-db-pw@127.0.0.1:1/nodb"
    status, _, err = await run(prefix, "status", env={**env, "RESILIENT_TG_FLEET_DB": unreachable})
    assert status == 3
    assert "postgresql://user@127.0.0.1:1/nodb" in err
    assert "S3cret-db-pw" not in err

    # Settings sealed with the fleet's key cannot be read without it.
    await admin.add(
        "sealed",
        None,
        settings=AccountSettings(api_id=5, api_hash="f" * 32),
        status=AccountStatus.PENDING,
    )
    keyless = [
        a for a in cli(prefix, "add", "sealed", "--bot") if a not in ("--key-env", "FLEET_KEY")
    ]
    with anyio.fail_after(PROCESS_TIMEOUT):
        result = await anyio.run_process(keyless, env=env, check=False)
    err = result.stderr.decode()
    assert result.returncode == 3
    assert "encrypted" in err
    assert "f" * 32 not in err
