"""What the client's parts may use of the client, and of each other: typing Protocols.

The parts (`._link` and `._supervisor`, `._postconnect`, `._requests`, `._gaps`,
`._exported`, `._upkeep`, `._shutdown`) take the client as a `ClientCore` and the link
as a `LinkView`, never as `ResilientClient` or `LinkSupervisor`: so no part imports the
composition, and the import graph has no cycle. This module imports leaf modules only.
`ResilientClient` satisfies `ClientCore` (mypy checks it wherever the client hands
itself to a part), `LinkSupervisor` satisfies `LinkView`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from ._callbacks import CallbackRegistry
from ._deadlines import Deadlines
from ._errors import AppRejectedError
from ._flag import Flag
from ._health import HealthTracker
from ._keepalive import Keepalive
from ._lease import LeaseKeeper
from ._policy import KeepalivePolicy, ReconnectPolicy
from ._state import ConnectionState, StateReason
from ._tasks import TaskSet
from .stores import SessionStore, StoreSession

__all__ = ["ClientCore", "LinkView", "Stoppable", "Telegram"]

#: The client's ``GatedTelegram`` (`._requests`): a ``TelegramClient``, which is untyped.
Telegram = Any


class LinkView(Protocol):
    """The link (`._supervisor.LinkSupervisor`) as the other parts see it: its counters,
    and the decisions they may ask of it."""

    attempt: int
    attempt_started: float | None
    connected_since: float | None
    outage_started: float | None
    first_attempt: bool
    post_connect: asyncio.Task[None] | None
    sender_ready: Flag
    switch_target: int | None
    switches: int
    up: bool

    def carry(self, on: bool) -> None: ...
    def abort(self, reason: StateReason, detail: str, *, quiet: bool = False) -> None: ...
    def auth_lost(self, why: str, error: BaseException | None) -> None: ...
    def rejected(self, name: str, error: BaseException) -> None: ...
    async def switch_dc(self, new_dc: int) -> None: ...


class Stoppable(Protocol):
    """A part with timers to cancel when the client leaves (`._upkeep.Upkeep`)."""

    def stop(self) -> None: ...


class ClientCore(Protocol):
    """The client (`ResilientClient`) as its parts see it: its options, its state machine,
    its task owner, and the parts it wires together."""

    # Options.
    reconnect_policy: ReconnectPolicy
    keepalive_policy: KeepalivePolicy
    request_timeout: float
    shutdown_timeout: float
    max_queued_requests: int
    lease_ttl: float
    flush_interval: float
    flood_sleep_threshold: float

    # Telethon's construction.
    _api_id: int
    _api_hash: str
    _connection_base: Any
    _telethon_kwargs: dict[str, Any]
    _early_handlers: list[tuple[Callable[..., Any], Any]]

    # State (changed through `_transition`; `_detail` is also refined in place).
    _state: ConnectionState
    _reason: StateReason | None
    _detail: str
    _state_changed: Flag
    _closing: bool
    cache: Any  # the MessageCache, or None (see resilient_tg.cache)
    _generation: int  # a new one for every link that goes down
    _carrying: Flag  # set while the current link carries requests
    _waiting_for_sender: int  # requests waiting for the sender (the queue bound)
    _exported_borrows: set[anyio.CancelScope] | None
    _rng: random.Random

    # Parts and resources.
    _store: SessionStore
    _session: StoreSession | None
    _health: HealthTracker
    _leases: LeaseKeeper
    _callbacks: CallbackRegistry
    _keepalive: Keepalive
    _tasks: TaskSet
    _deadlines: Deadlines

    @property
    def _telegram(self) -> Telegram | None: ...
    @property
    def _link(self) -> LinkView: ...
    @property
    def _upkeep(self) -> Stoppable: ...

    def _transition(
        self,
        new: ConnectionState,
        reason: StateReason,
        detail: str = "",
        *,
        error: BaseException | None = None,
        next_delay: float | None = None,
        message: str | None = None,
        level: int = logging.INFO,
    ) -> None: ...
    def _spawn(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> object: ...
    async def _guarded(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None: ...
    def _abort_link(self, reason: StateReason, detail: str, *, quiet: bool = False) -> None: ...
    def _rejected_error(self) -> AppRejectedError: ...
    def _record_pong(self, rtt: float) -> None: ...
    def _save_problem(self, error: BaseException) -> str: ...
    async def _on_raw_update(self, update: Any) -> None: ...
