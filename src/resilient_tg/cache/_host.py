"""What a MessageCache needs of its client (a Protocol: `ResilientClient` imports the
cache package, so the cache must not import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .._state import ConnectionState

__all__ = ["CacheHost"]

if TYPE_CHECKING:
    from ..stores import StoreSession


class CacheHost(Protocol):
    """What the cache uses of `ResilientClient` (not imported: it imports this package)."""

    cache: Any
    _telegram: Any
    _session: StoreSession | None

    @property
    def telegram(self) -> Any: ...
    @property
    def state(self) -> ConnectionState: ...
    def on_auth_lost(self, callback: Any) -> Any: ...
    def on_state_change(self, callback: Any) -> Any: ...
    def _spawn(self, name: str, fn: Any, *args: Any) -> object: ...
