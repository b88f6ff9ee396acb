"""pytest fixtures for MTProtoTestServer and FaultProxy (registered as a pytest11 plugin).

Importing this module starts nothing and needs only the core dependencies (pytest
loads it in every project where resilient-tg is installed); a server or proxy runs
only while a test uses its fixture, and the server fixture says which extra to install
when ``cryptography`` is missing. The fixtures are async, so tests run under the anyio
plugin on asyncio (Telethon is asyncio-only)::

    @pytest.mark.anyio
    async def test_bot_replies(mtproto_server, fault_proxy, proxied_session):
        client = TelegramClient(proxied_session, mtproto_server.api_id, mtproto_server.api_hash)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from telethon.sessions import MemorySession

    from ._proxy import FaultProxy
    from ._server import MTProtoTestServer


def _server_class() -> type[MTProtoTestServer]:
    try:
        from ._server import MTProtoTestServer
    except ImportError:
        pytest.fail(
            "the mtproto_server fixture needs the 'testing' extra (the 'cryptography' "
            "package): pip install 'resilient-tg[testing]'",
            pytrace=False,
        )
    return MTProtoTestServer


@pytest.fixture
async def mtproto_server() -> AsyncIterator[MTProtoTestServer]:
    """A fresh MTProtoTestServer on a free port, stopped after the test."""
    server_class = _server_class()
    async with server_class() as server:
        yield server


@pytest.fixture
async def fault_proxy(mtproto_server: MTProtoTestServer) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of ``mtproto_server``; point clients at ``fault_proxy.port``."""
    from ._proxy import FaultProxy

    async with FaultProxy(mtproto_server.host, mtproto_server.port) as proxy:
        yield proxy


@pytest.fixture
def proxied_session(mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy) -> MemorySession:
    """A Telethon MemorySession that reaches ``mtproto_server`` through ``fault_proxy``."""
    from telethon.sessions import MemorySession

    session = MemorySession()
    session.set_dc(mtproto_server.dc_id, fault_proxy.host, fault_proxy.port)
    return session
