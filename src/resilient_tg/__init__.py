"""resilient_tg: keep a Telethon MTProto client alive inside a service.

The session survives restarts, the link is watched and rebuilt forever with a sane
policy, a dead link is found in seconds, no update is lost across a reconnect, and
health tells the truth. The offline MTProtoTestServer and FaultProxy live in
`resilient_tg.testing`.
"""

from __future__ import annotations

import logging

from ._client import ResilientClient
from ._errors import (
    AccountExistsError,
    AppRejectedError,
    AuthLostError,
    CacheCorruptError,
    FleetError,
    LeaseLostError,
    NotConnectedError,
    ResilientTgError,
    ResultLostError,
    ResultUnknownError,
    SessionCorruptError,
    SessionInUseError,
    StaleCacheError,
    UnknownAccountError,
)
from ._gap import Gap, GapReason
from ._policy import KeepalivePolicy, ReconnectPolicy
from ._state import ConnectionState, Health, LeaseInfo, StateChange, StateReason, StoreInfo

__version__ = "0.1.0.dev0"

__all__ = [
    "AccountExistsError",
    "AppRejectedError",
    "AuthLostError",
    "CacheCorruptError",
    "ConnectionState",
    "FleetError",
    "Gap",
    "GapReason",
    "Health",
    "KeepalivePolicy",
    "LeaseInfo",
    "LeaseLostError",
    "NotConnectedError",
    "ReconnectPolicy",
    "ResilientClient",
    "ResilientTgError",
    "ResultLostError",
    "ResultUnknownError",
    "SessionCorruptError",
    "SessionInUseError",
    "StaleCacheError",
    "StateChange",
    "StateReason",
    "StoreInfo",
    "UnknownAccountError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
