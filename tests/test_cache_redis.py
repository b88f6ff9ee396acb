"""RedisCacheBackend against the local Redis (never skipped: CI starts Redis).

Every test works under its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from resilient_tg.cache import RedisCacheBackend
from resilient_tg.testing.cache_contract import CacheBackendContract

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
