"""Offline testing for MTProto code: a local Telegram-like server and a fault proxy.

``MTProtoTestServer`` speaks real MTProto 2.0 to an unmodified Telethon client;
``FaultProxy`` sits between them and breaks the network on command. The pytest
plugin (installed as an entry point) offers both as fixtures, and
`resilient_tg.testing.store_contract` is the test suite for your own
``SessionStore`` subclass, `resilient_tg.testing.cache_contract` the one for your own
``CacheBackend``. Needs the
``testing`` extra: ``pip install 'resilient-tg[testing]'``.

The names are imported on first use, so importing this package (as the pytest plugin
does in every project where resilient-tg is installed) needs only the core
dependencies; using the server without the extra raises ImportError saying so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._chat_control import TestChannel, TestGroup
    from ._files_control import FileInfo
    from ._fleet_harness import FleetHarness, FleetProcess
    from ._key_links import KeyLinkCount
    from ._proxy import FaultProxy
    from ._server import ConnectionInfo, MTProtoTestServer, RequestRecord, TestBot, TestUser
    from ._trust import trust_test_server

__all__ = [
    "ConnectionInfo",
    "FaultProxy",
    "FileInfo",
    "FleetHarness",
    "FleetProcess",
    "KeyLinkCount",
    "MTProtoTestServer",
    "RequestRecord",
    "TestBot",
    "TestChannel",
    "TestGroup",
    "TestUser",
    "trust_test_server",
]

# name -> the private module that defines it
_WHERE = {
    "ConnectionInfo": "._server",
    "FaultProxy": "._proxy",
    "FileInfo": "._files_control",
    "FleetHarness": "._fleet_harness",
    "FleetProcess": "._fleet_harness",
    "KeyLinkCount": "._key_links",
    "MTProtoTestServer": "._server",
    "RequestRecord": "._server",
    "TestBot": "._server",
    "TestChannel": "._chat_control",
    "TestGroup": "._chat_control",
    "TestUser": "._server",
    "trust_test_server": "._trust",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (the server needs ``cryptography``)."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
