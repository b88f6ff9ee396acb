"""The server's RSA key is trusted on purpose only: in its own process, or explicitly."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import anyio
import pytest
from telethon.crypto import rsa as telethon_rsa

from resilient_tg.testing import MTProtoTestServer, trust_test_server

pytestmark = pytest.mark.anyio

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import resilient_tg.testing as testing
    from telethon import TelegramClient
    from telethon.sessions import MemorySession

    async def main():
        cfg = json.loads(os.environ["TEST_SERVER"])
        if cfg["trust"]:
            testing.trust_test_server(cfg["pem"])
        session = MemorySession()
        session.set_dc(cfg["dc_id"], cfg["host"], cfg["port"])
        client = TelegramClient(session, cfg["api_id"], cfg["api_hash"],
                                connection_retries=0, retry_delay=0)
        try:
            await asyncio.wait_for(client.start(bot_token=cfg["token"]), 20)
            me = await client.get_me()
            print(json.dumps({"id": me.id}))
        finally:
            await client.disconnect()

    asyncio.run(main())
    """
)


async def run_child(server: MTProtoTestServer, token: str, *, trust: bool) -> tuple[int, str, str]:
    cfg = {
        "trust": trust,
        "pem": server.public_key_pem,
        "dc_id": server.dc_id,
        "host": server.host,
        "port": server.port,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
        "token": token,
    }
    env = {**os.environ, "TEST_SERVER": json.dumps(cfg)}
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", CHILD], env=env, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_child_process_connects_after_trust_test_server(
    mtproto_server: MTProtoTestServer,
) -> None:
    bot = mtproto_server.create_bot("child_bot")
    code, out, err = await run_child(mtproto_server, bot.token, trust=True)
    assert code == 0, err
    assert json.loads(out) == {"id": bot.id}


async def test_child_process_without_trust_refuses_the_server_key(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Importing resilient_tg.testing trusts nothing: the handshake cannot even start."""
    bot = mtproto_server.create_bot("child_bot")
    code, _out, err = await run_child(mtproto_server, bot.token, trust=False)
    assert code != 0
    assert "could not find a valid key for fingerprints" in err
    assert bot.token not in err


async def test_server_key_is_trusted_only_while_the_server_runs() -> None:
    before = set(telethon_rsa._server_keys)
    async with MTProtoTestServer():
        assert len(set(telethon_rsa._server_keys) - before) == 1
    assert set(telethon_rsa._server_keys) == before


def test_trust_test_server_rejects_what_is_not_a_pkcs1_public_key() -> None:
    with pytest.raises(ValueError, match="BEGIN RSA PUBLIC KEY"):
        trust_test_server("not a key")
    with pytest.raises(ValueError, match="does not hold a valid RSA public key"):
        trust_test_server("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n")
