"""Benchmarks: ResilientClient against raw Telethon, in the same run, offline.

Every scenario runs both on one MTProtoTestServer (behind one FaultProxy where the
network must fail) and reports ratios. ``python -m benchmarks --help``; what each
scenario measures is in its module docstring and in docs/benchmarks.md.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    delivery,
    detection,
    fleet,
    handshake,
    memory,
    overhead,
    recovery,
    reset,
    soak,
    stores,
)

__all__ = ["SCENARIOS"]

# Run order: each scenario starts its own server, so the order only affects wall time.
SCENARIOS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        detection,
        reset,
        recovery,
        handshake,
        delivery,
        overhead,
        stores,
        soak,
        fleet,
        memory,
    )
}
