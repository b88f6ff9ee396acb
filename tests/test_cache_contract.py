"""Every built-in cache backend passes the shipped contract suite
(resilient_tg.testing.cache_contract); the SQL and Redis ones in their own modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resilient_tg.cache import MemoryCacheBackend
from resilient_tg.testing.cache_contract import CacheBackendContract


class TestMemoryCacheBackend(CacheBackendContract):
    property_examples = 200

    @pytest.fixture
    async def backend(self) -> AsyncIterator[MemoryCacheBackend]:
        backend = MemoryCacheBackend()
        yield backend
        await backend.aclose()
