"""The Redis store example, against the local Redis (never skipped: CI starts Redis)."""

from __future__ import annotations

import importlib.util
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as redis

from resilient_tg import LeaseLostError, SessionInUseError
from resilient_tg.testing.store_contract import StoreContract

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_store_redis.py"
REDIS_URL = "redis://127.0.0.1:6379/0"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_store_redis", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


async def forget(name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(*(f"resilient_tg:{name}{s}" for s in ("", ":lease", ":token")))
    finally:
        await client.aclose()


@pytest.fixture
async def name() -> AsyncIterator[str]:
    """A session name no other run uses; its keys are deleted afterwards."""
    unique = f"test-{secrets.token_hex(6)}"
    yield unique
    await forget(unique)


def test_the_example_resumes_the_session_from_redis_after_a_restart() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first start: Alice is authorized (logged in with a code)" in result.stdout
    assert "restart: Alice is authorized (resumed from Redis without logging in)" in result.stdout


@pytest.mark.anyio
async def test_two_store_objects_share_one_lease_through_redis(name: str) -> None:
    a, b = example.RedisStore(REDIS_URL, name), example.RedisStore(REDIS_URL, name)
    try:
        lease = await a.acquire_lease("a", 30)
        with pytest.raises(SessionInUseError) as info:
            await b.acquire_lease("b", 30)
        assert info.value.holder == "a"
        await b.release_lease("b")  # the compare-and-set leaves a's lease alone
        with pytest.raises(LeaseLostError):
            await b.renew_lease("b", 30)
        assert (await a.renew_lease("a", 30)).token == lease.token
        await a.release_lease("a")
        assert (await b.acquire_lease("b", 30)).token == lease.token + 1
    finally:
        await a.aclose()
        await b.aclose()


def test_describe_never_shows_the_password() -> None:
    store = example.RedisStore("redis://:Sup3r-secret@127.0.0.1:6379/0", "bot")
    assert store.describe() == "redis://127.0.0.1:6379/0#bot"
    assert "Sup3r-secret" not in repr(store)


class TestRedisStoreContract(StoreContract):
    """The shipped contract suite, run on the example store as a user would."""

    @pytest.fixture
    async def store(self, name: str) -> AsyncIterator[Any]:
        store = example.RedisStore(REDIS_URL, name)
        yield store
        await store.aclose()
