"""resilient_tg.metrics: Prometheus series fed by a live client."""

from __future__ import annotations

import importlib
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from resilient_tg import ResilientClient
from resilient_tg.metrics import instrument
from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, seeded_store
from .conftest import wait_until

pytestmark = pytest.mark.anyio


class FlakyStore(MemoryStore):
    """Fails its first save, then works: one save error, then successful saves."""

    def __init__(self, data: SessionData | None) -> None:
        super().__init__(data)
        self.failures_left = 1

    async def save(self, data: SessionData) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("disk full (simulated)")
        await super().save(data)


async def test_metrics_follow_a_reset_fault() -> None:
    registry = CollectorRegistry()
    async with MTProtoTestServer() as server, FaultProxy(server.host, server.port) as proxy:
        alice = server.create_user("+15550001", "Alice")
        seeded = seeded_store(server, proxy.port, user=alice)
        store = FlakyStore(await seeded.load())
        client = ResilientClient(
            store,
            server.api_id,
            server.api_hash,
            keepalive=FAST_KEEPALIVE,
            reconnect=FAST_RECONNECT,
            shutdown_timeout=5.0,
        )
        metrics = instrument(client, registry, name="alice")

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(f"resilient_tg_{name}", {"client": "alice", **labels})

        assert value("connected") == 0.0
        assert value("state", state="idle") == 1.0
        assert value("last_pong_age_seconds") is None  # no pong yet
        async with client:
            await client.wait_connected(20)
            assert value("connected") == 1.0
            assert value("state", state="connected") == 1.0
            assert value("state", state="idle") == 0.0
            await wait_until(lambda: (value("keepalive_rtt_seconds_count") or 0) > 0)
            age = value("last_pong_age_seconds")
            assert age is not None
            assert 0 <= age < 5
            assert value("healthy") == 1.0
            assert value("reconnects_total", reason="reset") is None

            proxy.reset()
            await wait_until(lambda: value("reconnects_total", reason="reset") == 1.0)
            await client.wait_connected(20)
            assert value("connected") == 1.0
            await wait_until(lambda: (value("store_save_seconds_count") or 0) > 0)
        assert value("store_save_errors_total") == 1.0
        assert value("connected") == 0.0
        assert value("state", state="closed") == 1.0

    text = generate_latest(registry).decode()
    for name in (
        "resilient_tg_connected",
        "resilient_tg_state",
        "resilient_tg_reconnects_total",
        "resilient_tg_keepalive_rtt_seconds_bucket",
        "resilient_tg_last_pong_age_seconds",
        "resilient_tg_store_save_seconds_bucket",
        "resilient_tg_store_save_errors_total",
    ):
        assert name in text
    assert alice.phone not in text

    metrics.remove()
    assert registry.get_sample_value("resilient_tg_connected", {"client": "alice"}) is None


def local_store(port: int = 1) -> MemoryStore:
    return MemoryStore(SessionData(dc_id=2, server_address="127.0.0.1", port=port))


async def test_two_clients_on_one_registry_are_told_apart_by_the_client_label() -> None:
    registry = CollectorRegistry()
    async with (
        ResilientClient(local_store(), 1, "hash") as first,
        ResilientClient(local_store(), 1, "hash") as second,
    ):
        instrument(first, registry)  # labelled by the store's location: memory://
        with pytest.raises(ValueError, match="name="):
            instrument(second, registry)
        instrument(second, registry, name="second")
        for label in ("memory://", "second"):
            assert registry.get_sample_value("resilient_tg_connected", {"client": label}) == 0.0


async def test_a_distinct_namespace_gets_its_own_series() -> None:
    registry = CollectorRegistry()
    async with (
        ResilientClient(local_store(), 1, "hash") as first,
        ResilientClient(local_store(), 1, "hash") as second,
    ):
        instrument(first, registry, namespace="bot_a")
        instrument(second, registry, namespace="bot_b")
        for name in ("bot_a_connected", "bot_b_connected"):
            assert registry.get_sample_value(name, {"client": "memory://"}) == 0.0


def test_without_the_extra_the_import_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "resilient_tg.metrics")
    with pytest.raises(ImportError, match=r"resilient-tg\[metrics\]"):
        importlib.import_module("resilient_tg.metrics")
