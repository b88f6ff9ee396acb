"""RedisCacheBackend against the local Redis (never skipped: CI starts Redis).

Every test works under its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from resilient_tg.cache import RedisCacheBackend
from resilient_tg.testing.cache_contract import USER, CacheBackendContract, message

REDIS_URL = os.environ.get("RESILIENT_TG_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unique_prefix() -> str:
    return f"rtgt:{os.getpid()}:{secrets.token_hex(4)}"


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


class TestRedisCacheBackend(CacheBackendContract):
    property_examples = 50

    @pytest.fixture
    async def backend(self) -> AsyncIterator[RedisCacheBackend]:
        prefix = unique_prefix()
        backend = RedisCacheBackend(REDIS_URL, prefix=prefix)
        try:
            yield backend
        finally:
            await backend.aclose()
            await delete_prefix(prefix)


PASSWORD = "Sup3r-secret-never-shown"


def test_describe_and_repr_never_show_the_password() -> None:
    backend = RedisCacheBackend(f"redis://:{PASSWORD}@127.0.0.1:6379/0", prefix="gw:cache")
    assert backend.describe() == "redis://127.0.0.1:6379/0#gw:cache"
    assert PASSWORD not in repr(backend)
    with pytest.raises(ValueError, match="prefix"):
        RedisCacheBackend(REDIS_URL, prefix="")


@pytest.mark.anyio
async def test_keys_are_namespaced_by_prefix_and_escaped_account() -> None:
    prefix = unique_prefix()
    backend = RedisCacheBackend(REDIS_URL, prefix=prefix)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await backend.put_messages("team:bot%1", [message(USER, 1)])
        await backend.put_messages("other", [message(USER, 1)])
        keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:*")])
        own = [k for k in keys if k.startswith(f"{prefix}:team%3Abot%251:")]
        other = [k for k in keys if k.startswith(f"{prefix}:other:")]
        assert own
        assert other
        assert set(keys) == {*own, *other, f"{prefix}:accounts"}
        await backend.purge("team:bot%1")
        left = [k.decode() async for k in client.scan_iter(match=f"{prefix}:team%3Abot%251:*")]
        assert left == [f"{prefix}:team%3Abot%251:epoch"]  # kept: stale tokens stay stale
    finally:
        await client.aclose()
        await backend.aclose()
        await delete_prefix(prefix)


@pytest.mark.anyio
async def test_merges_run_as_cached_scripts_and_a_given_client_is_left_open() -> None:
    prefix = unique_prefix()
    client = aioredis.Redis.from_url(REDIS_URL)
    backend = RedisCacheBackend(client, prefix=prefix)
    try:
        assert backend.describe() == f"redis://127.0.0.1:6379/0#{prefix}"
        before = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        await backend.put_messages("a", [message(USER, 1)])
        await backend.put_messages("a", [message(USER, 3)])
        after = (await client.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert after >= before + 2
        await backend.aclose()
        assert await client.ping()
        decoding = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        with pytest.raises(ValueError, match="decode_responses"):
            RedisCacheBackend(decoding)
        await decoding.aclose()
    finally:
        await delete_prefix(prefix)
        await client.aclose()


def test_without_redis_the_import_error_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # as if redis were not installed
        import resilient_tg.cache
        from resilient_tg.cache import MemoryCacheBackend
        try:
            from resilient_tg.cache import RedisCacheBackend
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'resilient-tg[redis]'" in result.stdout
