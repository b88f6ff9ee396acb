"""Benchmarks: ResilientClient against raw Telethon, in the same run, offline.

Every scenario runs both on one MTProtoTestServer (behind one FaultProxy where the
network must fail) and reports ratios. ``python -m benchmarks --help``; what each
scenario measures is in its module docstring and in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["SCENARIOS"]

# Run order: each scenario starts its own server, so the order only affects wall time.
_ORDER = (
    "detection",
    "reset",
    "recovery",
    "handshake",
    "delivery",
    "overhead",
    "stores",
    "soak",
    "fleet",
    "memory",
    "workers",
    "cache",
)


def __getattr__(name: str) -> dict[str, ModuleType]:
    """``SCENARIOS`` (name -> module), imported on first use: the child processes of the
    fleet and memory scenarios import this package and need none of them."""
    if name != "SCENARIOS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    scenarios = {n: importlib.import_module(f".{n}", __name__) for n in _ORDER}
    assert all(n == m.NAME for n, m in scenarios.items())
    globals()["SCENARIOS"] = scenarios
    return scenarios
