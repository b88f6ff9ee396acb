"""What the claim rounds see of their Fleet (a Protocol, so `._rounds` does not import
`._fleet`, which owns it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import anyio.abc

from .._client import ResilientClient
from ..stores import SQLStore
from ._db import FleetDatabase

__all__ = ["FleetCore"]


class FleetCore(Protocol):
    """The fleet's configuration and services, as the rounds use them."""

    worker_id: str
    host: str
    capacity: int | None
    lease_ttl: float
    claim_interval: float
    max_moving: int
    claim_batch: int
    start_concurrency: int
    drain_timeout: float
    drain_concurrency: int

    @property
    def pid(self) -> int: ...
    @property
    def db(self) -> FleetDatabase: ...
    @property
    def base_store(self) -> SQLStore: ...
    @property
    def group(self) -> anyio.abc.TaskGroup: ...
    @property
    def handlers(self) -> list[tuple[Callable[..., Any], Any]]: ...
    def emit(self, kind: str, account: str, detail: str = "", change: Any = None) -> None: ...
    def make_client(self, store: SQLStore, options: dict[str, Any]) -> ResilientClient: ...
    @property
    def has_cache(self) -> bool: ...
    async def purge_cache(self, account: str) -> None: ...
