"""ResilientClient's constructor arguments, checked before anything is built: a wrong
value is a ValueError naming the argument, a Telethon argument a policy owns a TypeError
naming what to use instead."""

from __future__ import annotations

from typing import Any

__all__ = ["check_arguments"]

# Telethon arguments that a policy owns: passing one is a TypeError naming the field.
_OWNED_KWARGS = {
    "connection_retries": "ReconnectPolicy.max_attempts",
    "retry_delay": "ReconnectPolicy.initial_delay / max_delay",
    "auto_reconnect": "ReconnectPolicy (reconnection is always on)",
    "catch_up": "ResilientClient (missed updates are always fetched after a reconnect)",
    "timeout": "ReconnectPolicy.connect_timeout",
    "request_retries": "ResilientClient(request_timeout=...) (transient errors retry within it)",
    "raise_last_call_error": "ResilientClient (the real error is always raised)",
}


def check_arguments(
    api_id: int,
    api_hash: str,
    telethon_kwargs: dict[str, Any],
    *,
    request_timeout: float,
    shutdown_timeout: float,
    max_queued_requests: int,
    lease_ttl: float,
    flush_interval: float,
    flood_sleep_threshold: float,
) -> None:
    """Raise TypeError or ValueError for the first argument ResilientClient cannot take."""
    for name, owner in _OWNED_KWARGS.items():
        if name in telethon_kwargs:
            raise TypeError(f"ResilientClient does not take {name!r}: use {owner} instead")
    for name, value in (
        ("request_timeout", request_timeout),
        ("shutdown_timeout", shutdown_timeout),
        ("lease_ttl", lease_ttl),
        ("flush_interval", flush_interval),
    ):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"ResilientClient({name}=...) must be > 0, got {value!r}")
    if not isinstance(flood_sleep_threshold, (int, float)) or flood_sleep_threshold < 0:
        raise ValueError(
            "ResilientClient(flood_sleep_threshold=...) must be >= 0, "
            f"got {flood_sleep_threshold!r}"
        )
    if (
        isinstance(max_queued_requests, bool)
        or not isinstance(max_queued_requests, int)
        or max_queued_requests < 1
    ):
        raise ValueError(
            "ResilientClient(max_queued_requests=...) must be an int >= 1, "
            f"got {max_queued_requests!r}"
        )
    if not api_id or not api_hash:
        raise ValueError("ResilientClient needs api_id and api_hash")
