"""Several DCs in one MTProtoTestServer, driven by real unmodified Telethon.

Accounts live on a home DC; a client that asks another DC is sent there with
PHONE_MIGRATE_X / USER_MIGRATE_X / NETWORK_MIGRATE_X and Telethon switches DC by
help.getConfig's dc_options, making a new auth key on the new DC.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from telethon import TelegramClient, errors
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession
from telethon.tl import functions, types

from resilient_tg.cli import main
from resilient_tg.testing import FaultProxy, MTProtoTestServer
from resilient_tg.testing import _dcs as dcs_module
from resilient_tg.testing._trust import trusted_key

from .conftest import STEP_TIMEOUT, login, take_disconnect_error, telethon_client
from .test_cli_test_server import ServerProcess

pytestmark = pytest.mark.anyio

# A DC switch costs Telethon one attempt of the request that got *_MIGRATE_X.
RETRIES = 4


@pytest.fixture(autouse=True)
def fresh_telethon_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telethon caches help.getConfig on the TelegramClient class, for the whole process:
    each test's server has new ports, so start every test without the cache."""
    monkeypatch.setattr(TelegramClient, "_config", None)


def dcs_of(server: MTProtoTestServer, method: str) -> list[int]:
    return [r.dc_id for r in server.requests_for(method)]


async def raw(client: TelegramClient, request: Any) -> Any:
    """Send on the client's connection as is: Telethon's own call path would answer
    *_MIGRATE_X by switching DC, where these tests want to see the error."""
    return await asyncio.wait_for(client._sender.send(request), STEP_TIMEOUT)


def key_dc(server: MTProtoTestServer, client: TelegramClient) -> int:
    """The DC of the server-side key record behind the client's current auth key."""
    key_id = client.session.auth_key.key_id
    [dc] = {c.dc_id for c in server.connections if c.auth_key_id == key_id}
    return dc


async def test_server_serves_each_dc_on_its_own_port() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        assert server.dc_ids == (1, 2, 3, 4)
        assert server.dc_id == 2
        assert server.dc_port(2) == server.port
        ports = {server.dc_port(dc) for dc in server.dc_ids}
        assert len(ports) == 4
        assert server.dc_address(3) == (server.host, server.dc_port(3))
        assert server.advertised_address(3) == server.dc_address(3)
        for dc in server.dc_ids:
            async with telethon_client(server, session=server.telethon_session_for(dc)) as client:
                config = await client(functions.help.GetConfigRequest())
                assert config.this_dc == dc
                assert [(o.id, o.ip_address, o.port) for o in config.dc_options] == [
                    (d, server.host, server.dc_port(d)) for d in server.dc_ids
                ]
                [link] = server.connections
                assert link.dc_id == dc
        server.advertise(3, "127.0.0.9", 4433)
        assert server.advertised_address(3) == ("127.0.0.9", 4433)
        async with telethon_client(server) as client:
            config = await client(functions.help.GetConfigRequest())
            options = [(o.id, o.ip_address, o.port) for o in config.dc_options]
            assert (3, "127.0.0.9", 4433) in options


async def test_single_dc_server_keeps_its_one_dc() -> None:
    async with MTProtoTestServer(dc_id=5) as server:
        assert server.dc_ids == (5,)
        user = server.create_user("+15550001", "Alice")
        async with telethon_client(server) as client:
            me = await login(client, server, user)
            assert me.id == user.id
            config = await client(functions.help.GetConfigRequest())
            assert config.this_dc == 5
            assert [o.id for o in config.dc_options] == [5]


async def test_bad_dc_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="not among the served DCs"):
        MTProtoTestServer(dc_id=5, dcs=3)
    with pytest.raises(ValueError, match="dcs must be"):
        MTProtoTestServer(dcs=0)
    server = MTProtoTestServer(dcs=3)
    with pytest.raises(ValueError, match="not 4"):
        server.create_user("+15550001", "Alice", dc_id=4)
    with pytest.raises(ValueError, match="not 7"):
        server.create_bot("robot", dc_id=7)
    with pytest.raises(ValueError, match="not 9"):
        server.advertise(9, "127.0.0.1", 1)
    with pytest.raises(ValueError, match="port"):
        server.advertise(1, "127.0.0.1", 0)
    with pytest.raises(ValueError, match="not 0"):
        server.set_network_dc(0)


async def test_phone_migrate_moves_the_login_to_the_home_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550001", "Alice", dc_id=4)
        async with telethon_client(server, request_retries=RETRIES) as client:
            assert client.session.dc_id == 2
            key_on_dc2 = client.session.auth_key.key
            me = await login(client, server, alice)
            assert me.id == alice.id
            # The code went out on DC 4 after DC 2 answered PHONE_MIGRATE_4.
            assert dcs_of(server, "auth.sendCode") == [2, 4]
            assert dcs_of(server, "auth.signIn") == [4]
            session = client.session
            assert (session.dc_id, session.server_address, session.port) == (
                4,
                *server.advertised_address(4),
            )
            assert session.auth_key.key != key_on_dc2
            assert key_dc(server, client) == 4
            assert (await client.get_me()).id == alice.id
            history = await client(
                functions.messages.GetDialogsRequest(
                    offset_date=None,
                    offset_id=0,
                    offset_peer=types.InputPeerEmpty(),
                    limit=10,
                    hash=0,
                )
            )
            assert history.dialogs == []


async def test_migrated_login_goes_through_a_proxy_advertised_for_the_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server, FaultProxy(*server.dc_address(4)) as proxy:
        server.advertise(4, proxy.host, proxy.port)
        alice = server.create_user("+15550001", "Alice", dc_id=4)
        async with telethon_client(server, request_retries=RETRIES) as client:
            assert proxy.links_total == 0
            await login(client, server, alice)
            assert (client.session.server_address, client.session.port) == (
                proxy.host,
                proxy.port,
            )
            assert proxy.links_open == 1
            up, down = proxy.bytes_up, proxy.bytes_down
            assert up > 0
            assert down > 0
            assert (await client.get_me()).id == alice.id
            assert proxy.bytes_up > up
            assert proxy.bytes_down > down
            [dc4_link] = [c for c in server.connections if c.dc_id == 4]
            assert dc4_link.auth_key_id == client.session.auth_key.key_id


async def test_bot_login_follows_user_migrate() -> None:
    async with MTProtoTestServer(dcs=3) as server:
        bot = server.create_bot("robot", dc_id=3)
        async with telethon_client(server, request_retries=RETRIES) as client:
            me = await login(client, server, bot)
            assert me.id == bot.id
            assert me.bot
            assert dcs_of(server, "auth.importBotAuthorization") == [2, 3]
            assert client.session.dc_id == 3
            assert key_dc(server, client) == 3


async def test_network_migrate_then_phone_migrate_reach_the_home_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550001", "Alice", dc_id=4)
        server.set_network_dc(3)
        assert server.network_dc == 3
        session = server.telethon_session_for(1)
        async with telethon_client(server, session=session, request_retries=RETRIES) as client:
            nearest = await client(functions.help.GetNearestDcRequest())
            assert (nearest.this_dc, nearest.nearest_dc) == (1, 3)
            await login(client, server, alice)
            # DC 1: NETWORK_MIGRATE_3; DC 3: PHONE_MIGRATE_4; DC 4 sends the code.
            assert dcs_of(server, "auth.sendCode") == [1, 3, 4]
            assert client.session.dc_id == 4
        server.set_network_dc(None)
        server.clear_requests()
        async with telethon_client(server, request_retries=RETRIES) as client:
            await login(client, server, alice)
            assert dcs_of(server, "auth.sendCode") == [2, 4]


async def test_raw_migrate_errors_name_the_home_dc() -> None:
    async with MTProtoTestServer(dcs=3) as server:
        alice = server.create_user("+15550001", "Alice", dc_id=3)
        bot = server.create_bot("robot", dc_id=1)
        async with telethon_client(server) as client:
            with pytest.raises(errors.PhoneMigrateError) as phone:
                await raw(
                    client,
                    functions.auth.SendCodeRequest(
                        alice.phone, server.api_id, server.api_hash, types.CodeSettings()
                    ),
                )
            assert phone.value.new_dc == 3
            with pytest.raises(errors.PhoneMigrateError):
                await raw(client, functions.auth.SignInRequest(alice.phone, "hash", "12345"))
            with pytest.raises(errors.UserMigrateError) as user:
                await raw(
                    client,
                    functions.auth.ImportBotAuthorizationRequest(
                        0, server.api_id, server.api_hash, bot.token
                    ),
                )
            assert user.value.new_dc == 1
            server.set_network_dc(1)
            with pytest.raises(errors.NetworkMigrateError) as network:
                await raw(
                    client,
                    functions.auth.SendCodeRequest(
                        "+15550009", server.api_id, server.api_hash, types.CodeSettings()
                    ),
                )
            assert network.value.new_dc == 1
            # The phone's home DC still serves it while a network DC is set.
            assert client.session.dc_id == 2


async def test_key_made_on_one_dc_gets_404_on_another() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550001", "Alice")
        key = server.issue_auth_key(alice.id)
        await assert_key_not_found(server, 4, key)
        # The same key is good on its own DC.
        session = server.telethon_session_for(2)
        session.auth_key = AuthKey(key)
        async with telethon_client(server, session=session) as client:
            assert (await client.get_me()).id == alice.id


async def assert_key_not_found(server: MTProtoTestServer, dc_id: int, key: bytes) -> None:
    """Telethon, given ``key`` for DC ``dc_id``'s listener, sees transport error -404."""
    session = server.telethon_session_for(dc_id)
    session.auth_key = AuthKey(key)
    client = TelegramClient(session, server.api_id, server.api_hash)
    try:
        with pytest.raises(errors.AuthKeyNotFound):
            await asyncio.wait_for(client.connect(), STEP_TIMEOUT)
    finally:
        take_disconnect_error(client)
        await client.disconnect()


async def test_issued_keys_belong_to_the_accounts_home_dc() -> None:
    async with MTProtoTestServer(dcs=3) as server:
        alice = server.create_user("+15550001", "Alice", dc_id=3)
        session = server.telethon_session_for(3)
        session.auth_key = AuthKey(server.issue_auth_key(alice.id))
        async with telethon_client(server, session=session) as client:
            assert (await client.get_me()).id == alice.id
            assert key_dc(server, client) == 3
        # An explicit dc_id wins; that key is known on DC 1 only.
        off_home = server.issue_auth_key(alice.id, dc_id=1)
        await assert_key_not_found(server, 3, off_home)
        assert server.revoke_auth_keys(alice.id) == 2


async def test_exported_sender_is_authorized_on_the_other_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550001", "Alice")
        async with telethon_client(server, request_retries=RETRIES) as client:
            await login(client, server, alice)
            sender = await asyncio.wait_for(client._borrow_exported_sender(4), STEP_TIMEOUT)
            try:
                [me] = await asyncio.wait_for(
                    sender.send(functions.users.GetUsersRequest([types.InputUserSelf()])),
                    STEP_TIMEOUT,
                )
                assert me.id == alice.id
                with pytest.raises(errors.UserMigrateError) as migrate:
                    await asyncio.wait_for(
                        sender.send(functions.updates.GetStateRequest()), STEP_TIMEOUT
                    )
                assert migrate.value.new_dc == 2
                # Updates reach the account's sessions on its home DC only.
                homes = {s.link.dc_id for s in server._sessions_of(alice.id) if s.link}
                assert homes == {2}
                assert {c.dc_id for c in server.connections if c.auth_key_id} == {2, 4}
            finally:
                await client._return_exported_sender(sender)
            assert dcs_of(server, "auth.exportAuthorization") == [2]
            assert dcs_of(server, "auth.importAuthorization") == [4]
            # The main connection stayed on the home DC.
            assert client.session.dc_id == 2
            assert key_dc(server, client) == 2


async def test_exported_authorization_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcs_module, "EXPORT_TTL", 0.0)
    async with MTProtoTestServer(dcs=3) as server:
        alice = server.create_user("+15550001", "Alice")
        async with telethon_client(server) as home:
            await login(home, server, alice)
            export = await home(functions.auth.ExportAuthorizationRequest(dc_id=3))
            async with telethon_client(server, session=server.telethon_session_for(3)) as dc3:
                with pytest.raises(errors.AuthBytesInvalidError):
                    await dc3(functions.auth.ImportAuthorizationRequest(alice.id, export.bytes))


async def test_exported_authorization_is_single_use_for_its_dc() -> None:
    async with MTProtoTestServer(dcs=4) as server:
        alice = server.create_user("+15550001", "Alice")
        async with telethon_client(server) as home:
            await login(home, server, alice)
            with pytest.raises(errors.DcIdInvalidError):
                await home(functions.auth.ExportAuthorizationRequest(dc_id=9))
            for_dc3 = await home(functions.auth.ExportAuthorizationRequest(dc_id=3))
            for_dc4 = await home(functions.auth.ExportAuthorizationRequest(dc_id=4))
            assert for_dc4.id == alice.id
            async with telethon_client(server, session=server.telethon_session_for(4)) as dc4:
                with pytest.raises(errors.AuthBytesInvalidError):
                    await dc4(functions.auth.ImportAuthorizationRequest(alice.id, for_dc3.bytes))
                with pytest.raises(errors.AuthBytesInvalidError):
                    await dc4(
                        functions.auth.ImportAuthorizationRequest(alice.id + 1, for_dc4.bytes)
                    )
                imported = await dc4(
                    functions.auth.ImportAuthorizationRequest(alice.id, for_dc4.bytes)
                )
                assert imported.user.id == alice.id
                assert (await dc4.get_me()).id == alice.id
                with pytest.raises(errors.AuthBytesInvalidError):
                    await dc4(functions.auth.ImportAuthorizationRequest(alice.id, for_dc4.bytes))
                # Exports come from the home DC only.
                with pytest.raises(errors.UserMigrateError):
                    await raw(dc4, functions.auth.ExportAuthorizationRequest(dc_id=3))


async def test_restart_keeps_every_dc_port_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with MTProtoTestServer(tmp_path, dcs=3) as server:
        alice = server.create_user("+15550001", "Alice", dc_id=3)
        ports = {dc: server.dc_port(dc) for dc in server.dc_ids}
        async with telethon_client(server, request_retries=RETRIES) as client:
            await login(client, server, alice)
            session = client.session
        await server.restart()
        assert {dc: server.dc_port(dc) for dc in server.dc_ids} == ports
        async with telethon_client(server, session=session) as client:
            assert client.session.dc_id == 3
            assert (await client.get_me()).id == alice.id
            assert key_dc(server, client) == 3
    # A new server on the same data_dir (new ports) still homes Alice on DC 3.
    monkeypatch.setattr(TelegramClient, "_config", None)
    async with (
        MTProtoTestServer(tmp_path, dcs=3) as server,
        telethon_client(server, request_retries=RETRIES) as client,
    ):
        await login(client, server, alice)
        assert dcs_of(server, "auth.sendCode") == [2, 3]
        assert key_dc(server, client) == 3


async def test_cli_test_server_serves_dcs_and_homes_accounts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["test-server", "--dcs", "3", "--home-dc", "5"]) == 2
    assert "--home-dc 5" in capsys.readouterr().err
    assert main(["test-server", "--dcs", "0"]) == 2
    assert "--dcs" in capsys.readouterr().err
    args = ("--dcs", "4", "--home-dc", "4", "--user", "+15550001:Alice", "--bot", "echo_bot")
    server = await anyio.to_thread.run_sync(lambda: ServerProcess(*args))
    try:
        info = server.info
        dcs = {d["id"]: (d["host"], d["port"]) for d in info["dcs"]}
        assert sorted(dcs) == [1, 2, 3, 4]
        assert dcs[2] == (info["host"], info["port"])
        assert len({port for _, port in dcs.values()}) == 4
        assert [u["dc_id"] for u in info["users"]] == [4]
        assert [b["dc_id"] for b in info["bots"]] == [4]
        session = MemorySession()
        session.set_dc(2, *dcs[2])
        pem = await anyio.Path(info["public_key_file"]).read_text()
        with trusted_key(pem):
            client = TelegramClient(
                session, info["api_id"], info["api_hash"], request_retries=RETRIES
            )
            await asyncio.wait_for(client.connect(), STEP_TIMEOUT)
            try:
                await asyncio.wait_for(client.send_code_request("+15550001"), STEP_TIMEOUT)
                code = await anyio.to_thread.run_sync(server.wait_code, "+15550001")
                me = await asyncio.wait_for(client.sign_in("+15550001", code), STEP_TIMEOUT)
                assert me.first_name == "Alice"
                assert (session.dc_id, session.server_address, session.port) == (4, *dcs[4])
            finally:
                await client.disconnect()
    finally:
        rc, err = await anyio.to_thread.run_sync(server.stop, signal.SIGTERM)
    assert rc == 0, err


async def test_restart_without_data_dir_keeps_ports_and_advertised_addresses() -> None:
    async with MTProtoTestServer(dcs=3) as server:
        server.create_user("+15550001", "Alice", dc_id=3)
        server.advertise(3, "127.0.0.9", 4433)
        ports = [server.dc_port(dc) for dc in server.dc_ids]
        await server.restart()
        assert [server.dc_port(dc) for dc in server.dc_ids] == ports
        assert server.advertised_address(3) == ("127.0.0.9", 4433)
        async with telethon_client(server, session=server.telethon_session_for(3)) as client:
            config = await client(functions.help.GetConfigRequest())
            assert (3, "127.0.0.9", 4433) in [
                (o.id, o.ip_address, o.port) for o in config.dc_options
            ]
            # Without data_dir the accounts are gone: the phone signs up where it asks.
            result = await client(
                functions.auth.SendCodeRequest(
                    "+15550001", server.api_id, server.api_hash, types.CodeSettings()
                )
            )
            assert result.phone_code_hash
