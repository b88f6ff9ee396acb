"""Prometheus metrics for a ResilientClient (the ``metrics`` extra: prometheus-client).

    from resilient_tg.metrics import instrument
    registry = prometheus_client.CollectorRegistry()
    instrument(client, registry)   # then serve prometheus_client.generate_latest(registry)

Every series carries a ``client`` label (the session's store location unless you pass
``name=``), so several clients share one registry without colliding. With the default
namespace ``resilient_tg``:

- ``resilient_tg_connected{client}``: 1 while the link is up (catching up or connected)
- ``resilient_tg_healthy{client}``: 1 when ``Health.healthy`` (what /health answers)
- ``resilient_tg_state{client,state}``: 1 for the current ConnectionState, 0 for the others
- ``resilient_tg_reconnects_total{client,reason}``: links lost, by StateReason
- ``resilient_tg_keepalive_rtt_seconds{client}``: histogram of keepalive round trips
- ``resilient_tg_last_pong_age_seconds{client}``: seconds since the last pong (computed
  at scrape time; absent until the first pong)
- ``resilient_tg_store_save_seconds{client}``: histogram of session writes
- ``resilient_tg_store_save_errors_total{client}``: failed session writes

Gauges are read from ``client.health()`` at scrape time (no I/O); counters and
histograms are fed by the client as events happen. Labels hold no secrets.

A fleet worker: ``instrument_fleet(fleet, registry)`` (see its docstring) adds the
worker's gauges and event counts, and every account's client series.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "resilient_tg.metrics needs prometheus-client: pip install 'resilient-tg[metrics]'"
    ) from exc

from ._state import ConnectionState, StateChange

if TYPE_CHECKING:
    from ._client import ResilientClient
    from .fleet import Fleet, FleetEvent

__all__ = ["ClientMetrics", "instrument", "instrument_fleet"]

RTT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAVE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def instrument(
    client: ResilientClient,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "resilient_tg",
    name: str | None = None,
) -> ClientMetrics:
    """Register ``client``'s metrics on ``registry`` and return the handle.

    ``registry=None`` means prometheus_client's global ``REGISTRY`` (what its default
    ``/metrics`` exposition serves); pass your own ``CollectorRegistry`` to keep them
    apart. ``name`` is the ``client`` label (default: the store's location); a second
    client with the same label on one registry is a ValueError. Call it before or after
    entering the client.
    """
    target = REGISTRY if registry is None else registry
    with _LOCK:
        families = _FAMILIES.setdefault(target, {})
        family = families.get(namespace)
        if family is None:
            family = families[namespace] = _Family(target, namespace)
        label = name if name is not None else client.store.describe()
        if label in family.clients:
            raise ValueError(
                f"a client labelled client={label!r} is already instrumented on this registry "
                f"(namespace {namespace!r}); pass instrument(..., name='...') to tell them apart"
            )
        metrics = ClientMetrics(client, family, label)
        family.clients[label] = metrics
    client._add_listener(metrics)
    return metrics


class ClientMetrics:
    """One client's series on a registry; also the client's internal listener."""

    def __init__(self, client: ResilientClient, family: _Family, name: str) -> None:
        self.client = client
        self.name = name
        self._family = family
        self._reasons: set[str] = set()
        self._removed = False
        # Children created up front so a scrape shows zero counts, not missing series.
        self._rtt = family.rtt.labels(client=name)
        self._save = family.save.labels(client=name)
        self._save_errors = family.save_errors.labels(client=name)

    def remove(self) -> None:
        """Drop this client's series from the registry (e.g. after the client is closed)."""
        family = self._family
        with _LOCK:
            if self._removed:
                return
            self._removed = True
            family.clients.pop(self.name, None)
            for reason in self._reasons:
                family.reconnects.remove(self.name, reason)
            family.rtt.remove(self.name)
            family.save.remove(self.name)
            family.save_errors.remove(self.name)

    # ClientListener: called inline by the client ------------------------------------------

    def on_transition(self, change: StateChange) -> None:
        if self._removed:
            return
        # The client counts a reconnect exactly when a live link goes back to (re)connecting.
        if change.old.link_up and change.new in (
            ConnectionState.RECONNECTING,
            ConnectionState.CONNECTING,
        ):
            reason = change.reason.value
            self._reasons.add(reason)
            self._family.reconnects.labels(client=self.name, reason=reason).inc()

    def on_pong(self, rtt: float) -> None:
        if not self._removed:
            self._rtt.observe(rtt)

    def on_save(self, duration: float, error: BaseException | None) -> None:
        if self._removed:
            return
        if error is None:
            self._save.observe(duration)
        else:
            self._save_errors.inc()


class _Family:
    """The metric objects shared by every client on one registry and namespace."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.namespace = namespace
        self.clients: dict[str, ClientMetrics] = {}
        self.reconnects = Counter(
            "reconnects",
            "Links lost and being rebuilt, by reason.",
            ("client", "reason"),
            namespace=namespace,
            registry=registry,
        )
        self.rtt = Histogram(
            "keepalive_rtt_seconds",
            "Keepalive ping round-trip time.",
            ("client",),
            namespace=namespace,
            registry=registry,
            buckets=RTT_BUCKETS,
        )
        self.save = Histogram(
            "store_save_seconds",
            "Duration of successful session writes to the store.",
            ("client",),
            namespace=namespace,
            registry=registry,
            buckets=SAVE_BUCKETS,
        )
        self.save_errors = Counter(
            "store_save_errors",
            "Failed session writes to the store.",
            ("client",),
            namespace=namespace,
            registry=registry,
        )
        registry.register(_HealthCollector(self))


class _HealthCollector(Collector):
    """Gauges computed from ``client.health()`` at scrape time."""

    def __init__(self, family: _Family) -> None:
        self._family = family

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        connected, healthy, state, pong_age = families
        now = time.time()
        with _LOCK:
            clients = list(self._family.clients.values())
        for metrics in clients:
            health = metrics.client.health()
            label = metrics.name
            connected.add_metric([label], 1.0 if health.connected else 0.0)
            healthy.add_metric([label], 1.0 if health.healthy else 0.0)
            for value in ConnectionState:
                state.add_metric([label, value.value], 1.0 if health.state is value else 0.0)
            if health.last_pong_at is not None:
                pong_age.add_metric([label], max(0.0, now - health.last_pong_at))
        return families

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        ns = self._family.namespace
        return (
            GaugeMetricFamily(
                f"{ns}_connected",
                "1 while the MTProto link is up (catching up or connected).",
                labels=["client"],
            ),
            GaugeMetricFamily(
                f"{ns}_healthy",
                "1 when connected, authorized and answering keepalive pings.",
                labels=["client"],
            ),
            GaugeMetricFamily(
                f"{ns}_state",
                "1 for the client's current connection state.",
                labels=["client", "state"],
            ),
            GaugeMetricFamily(
                f"{ns}_last_pong_age_seconds",
                "Seconds since the last keepalive pong.",
                labels=["client"],
            ),
        )


_LOCK = threading.RLock()
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Family]] = (
    weakref.WeakKeyDictionary()
)


def instrument_fleet(
    fleet: Fleet,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "resilient_tg",
    per_account: bool = True,
) -> None:
    """Register a fleet worker's metrics on ``registry`` (call before entering the fleet).

    Gauges, read from ``fleet.health()`` at scrape time, labelled ``worker``:
    ``{ns}_fleet_healthy``, ``{ns}_fleet_accounts`` (this worker's),
    ``{ns}_fleet_accounts_by_state{state}``, ``{ns}_fleet_target`` (its fair share),
    ``{ns}_fleet_live_workers`` and ``{ns}_fleet_total_accounts`` (active accounts in the
    database); and the counter ``{ns}_fleet_events_total{kind}`` (claimed, connected,
    disconnected, released, lost). With ``per_account``, every account this worker runs
    also gets the client series of `instrument`, labelled ``client=<account name>``,
    removed again when the account leaves this worker.
    """
    target = REGISTRY if registry is None else registry
    worker = fleet.worker_id
    events = Counter(
        "fleet_events",
        "Fleet events of this worker's accounts, by kind.",
        ("worker", "kind"),
        namespace=namespace,
        registry=target,
    )
    target.register(_FleetCollector(fleet, namespace))
    accounts: dict[str, ClientMetrics] = {}

    def count(event: FleetEvent) -> None:
        events.labels(worker=worker, kind=event.kind).inc()
        if not per_account:
            return
        if event.kind == "claimed":
            client = fleet.accounts.get(event.account)
            if client is not None and event.account not in accounts:
                accounts[event.account] = instrument(
                    client, target, namespace=namespace, name=event.account
                )
        elif event.kind in ("released", "lost"):
            metrics = accounts.pop(event.account, None)
            if metrics is not None:
                metrics.remove()

    for kind in ("claimed", "connected", "disconnected", "released", "lost"):
        events.labels(worker=worker, kind=kind)  # zero, not missing, before the first
        getattr(fleet, f"on_{kind}")(count)


class _FleetCollector(Collector):
    """Gauges computed from ``fleet.health()`` at scrape time."""

    def __init__(self, fleet: Fleet, namespace: str) -> None:
        self._fleet = fleet
        self._ns = namespace

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        healthy, accounts, by_state, target, live, total = families
        health = self._fleet.health()
        label = [health.worker_id]
        healthy.add_metric(label, 1.0 if health.healthy else 0.0)
        accounts.add_metric(label, float(health.running))
        for state, n in sorted(health.counts.items()):
            by_state.add_metric([health.worker_id, state], float(n))
        target.add_metric(label, float(health.target))
        live.add_metric(label, float(health.live_workers))
        total.add_metric(label, float(health.total_accounts))
        return families

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        ns = self._ns
        return (
            GaugeMetricFamily(
                f"{ns}_fleet_healthy",
                "1 while this worker's claim rounds reach the database.",
                labels=["worker"],
            ),
            GaugeMetricFamily(
                f"{ns}_fleet_accounts", "Accounts this worker runs.", labels=["worker"]
            ),
            GaugeMetricFamily(
                f"{ns}_fleet_accounts_by_state",
                "This worker's accounts by connection state.",
                labels=["worker", "state"],
            ),
            GaugeMetricFamily(f"{ns}_fleet_target", "This worker's fair share.", labels=["worker"]),
            GaugeMetricFamily(
                f"{ns}_fleet_live_workers",
                "Live workers seen at the last claim round.",
                labels=["worker"],
            ),
            GaugeMetricFamily(
                f"{ns}_fleet_total_accounts",
                "Active accounts in the fleet's database at the last claim round.",
                labels=["worker"],
            ),
        )
