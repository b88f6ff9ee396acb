"""2FA on MTProtoTestServer: SRP as Telegram does it, checked by an unmodified Telethon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from telethon import errors
from telethon.password import compute_check
from telethon.tl import functions, types

from resilient_tg.stores import MemoryStore, SessionData
from resilient_tg.testing import MTProtoTestServer
from resilient_tg.testing._crypto import DH_PRIME

from .clienttools import running
from .conftest import STEP_TIMEOUT, telethon_client

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"


async def _code_step(client: object, server: MTProtoTestServer, phone: str) -> None:
    """Send and enter the login code; a 2FA account then needs its password."""
    await asyncio.wait_for(client.send_code_request(phone), STEP_TIMEOUT)  # type: ignore[attr-defined]
    with pytest.raises(errors.SessionPasswordNeededError):
        await asyncio.wait_for(
            client.sign_in(phone, server.login_code(phone)),  # type: ignore[attr-defined]
            STEP_TIMEOUT,
        )


async def test_login_with_code_then_password_succeeds() -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD, hint="horse")
        async with telethon_client(server) as client:
            await _code_step(client, server, alice.phone)
            assert not await client.is_user_authorized()
            me = await asyncio.wait_for(client.sign_in(password=PASSWORD), STEP_TIMEOUT)
            assert me.id == alice.id
            assert await client.is_user_authorized()
            assert (await client.get_me()).id == alice.id


async def test_get_password_describes_the_srp_parameters() -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD, hint="horse")
        async with telethon_client(server) as client:
            await _code_step(client, server, alice.phone)
            pwd = await client(functions.account.GetPasswordRequest())
    algo = pwd.current_algo
    assert pwd.has_password
    assert pwd.hint == "horse"
    assert isinstance(algo, types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow)
    assert algo.g == 3
    assert algo.p == DH_PRIME.to_bytes(256, "big")
    assert len(algo.salt1) == 40
    assert len(algo.salt2) == 16
    assert len(pwd.srp_B) == 256
    assert 0 < int.from_bytes(pwd.srp_B, "big") < DH_PRIME
    assert pwd.srp_id
    assert isinstance(
        pwd.new_algo, types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow
    )
    assert len(pwd.new_algo.salt1) == 8
    assert isinstance(pwd.new_secure_algo, types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000)
    assert len(pwd.secure_random) == 256


async def test_wrong_password_is_password_hash_invalid_and_right_one_still_works() -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD)
        async with telethon_client(server) as client:
            await _code_step(client, server, alice.phone)
            with pytest.raises(errors.PasswordHashInvalidError):
                await asyncio.wait_for(client.sign_in(password="wrong"), STEP_TIMEOUT)
            assert not await client.is_user_authorized()
            me = await asyncio.wait_for(client.sign_in(password=PASSWORD), STEP_TIMEOUT)
            assert me.id == alice.id


async def test_stale_srp_id_is_srp_id_invalid() -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD)
        async with telethon_client(server) as client:
            await _code_step(client, server, alice.phone)
            first = await client(functions.account.GetPasswordRequest())
            await client(functions.account.GetPasswordRequest())  # makes `first` stale
            with pytest.raises(errors.SrpIdInvalidError):
                await client(functions.auth.CheckPasswordRequest(compute_check(first, PASSWORD)))


async def test_account_without_password_reports_has_password_false() -> None:
    async with MTProtoTestServer() as server:
        bob = server.create_user("+15550002", "Bob")
        async with telethon_client(server) as client:
            await client.send_code_request(bob.phone)
            await client.sign_in(bob.phone, server.login_code(bob.phone))  # no password asked
            pwd = await client(functions.account.GetPasswordRequest())
    assert not pwd.has_password
    assert pwd.current_algo is None
    assert pwd.srp_B is None
    assert pwd.new_algo.p == DH_PRIME.to_bytes(256, "big")
    assert pwd.new_algo.g == 3


async def test_password_survives_a_restart_with_data_dir_and_is_not_stored_in_clear(
    tmp_path: Path,
) -> None:
    async with MTProtoTestServer(data_dir=tmp_path) as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD, hint="horse")
    assert PASSWORD not in (tmp_path / "state.json").read_text()
    async with (
        MTProtoTestServer(data_dir=tmp_path) as server,
        telethon_client(server) as client,
    ):
        await _code_step(client, server, alice.phone)
        with pytest.raises(errors.PasswordHashInvalidError):
            await asyncio.wait_for(client.sign_in(password="wrong"), STEP_TIMEOUT)
        me = await asyncio.wait_for(client.sign_in(password=PASSWORD), STEP_TIMEOUT)
        assert me.id == alice.id
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["accounts"][0]["password"]["hint"] == "horse"


async def test_resilient_client_is_unauthorized_until_check_password() -> None:
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        server.set_password(alice.id, PASSWORD)
        store = MemoryStore(
            SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port)
        )
        async with running(store, server) as (client, recorder):
            await client.wait_connected(STEP_TIMEOUT)
            assert client.health().authorized is False
            telegram = client.telegram
            await telegram.send_code_request(alice.phone)
            with pytest.raises(errors.SessionPasswordNeededError):
                await telegram.sign_in(alice.phone, server.login_code(alice.phone))
            assert client.health().authorized is False
            assert not client.health().healthy
            await telegram.sign_in(password=PASSWORD)
            assert client.health().authorized is True
            await recorder.until(lambda: client.health().healthy)
        saved = await store.load()
        assert saved is not None
        assert saved.auth_key is not None
