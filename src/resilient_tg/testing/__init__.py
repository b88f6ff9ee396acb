"""Offline testing for MTProto code: a local Telegram-like server and a fault proxy.

``MTProtoTestServer`` speaks real MTProto 2.0 to an unmodified Telethon client;
``FaultProxy`` sits between them and breaks the network on command. The pytest
plugin (installed as an entry point) offers both as fixtures, and
`resilient_tg.testing.store_contract` is the test suite for your own
``SessionStore`` subclass. Needs the
``testing`` extra: ``pip install 'resilient-tg[testing]'``.
"""

from __future__ import annotations

from ._proxy import FaultProxy
from ._server import ConnectionInfo, MTProtoTestServer, RequestRecord, TestBot, TestUser
from ._trust import trust_test_server

__all__ = [
    "ConnectionInfo",
    "FaultProxy",
    "MTProtoTestServer",
    "RequestRecord",
    "TestBot",
    "TestUser",
    "trust_test_server",
]
