"""Every built-in store passes the shipped contract suite (resilient_tg.testing.store_contract)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resilient_tg.stores import EnvStringStore, FileStore, MemoryStore
from resilient_tg.testing.store_contract import StoreContract

KEY_HEX = "8f" * 16 + "3c" * 16  # an encryption key for the encrypted FileStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore()
        yield store
        await store.aclose()


class TestFileStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[FileStore]:
        store = FileStore(tmp_path / "sessions" / "bot.session")
        yield store
        await store.aclose()


class TestEncryptedFileStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[FileStore]:
        store = FileStore(tmp_path / "bot.session", encryption_key=KEY_HEX)
        yield store
        await store.aclose()

    @pytest.fixture
    def store_secrets(self) -> list[bytes | str]:
        return [KEY_HEX, bytes.fromhex(KEY_HEX)]


class TestEnvStringStoreWithFallback(StoreContract):
    @pytest.fixture
    async def store(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[EnvStringStore]:
        monkeypatch.delenv("RTG_CONTRACT_SESSION", raising=False)
        store = EnvStringStore("RTG_CONTRACT_SESSION", fallback=FileStore(tmp_path / "s.json"))
        yield store
        await store.aclose()
        assert "RTG_CONTRACT_SESSION" not in os.environ
