"""MTProtoTestServer follows the MTProto spec where clients other than Telethon rely on it.

Every test speaks raw frames over a real socket through tests/rawmtproto.py, the way
GramJS, mtcute, Kurigram or TDLib do, independent of Telethon's client.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct

import anyio
import pytest
from telethon.tl import functions, types
from telethon.tl.alltlobjects import LAYER
from telethon.tl.core import RpcResult

from resilient_tg.testing import MTProtoTestServer

from .rawmtproto import (
    STEP,
    RawLink,
    Session,
    big_endian,
    create_auth_key,
    factor,
    plain_call,
    rpc_result_obj,
)

pytestmark = pytest.mark.anyio

SERVER_LOG = "resilient_tg.testing"


def _init(server: MTProtoTestServer, query: object, layer: int = LAYER) -> object:
    return functions.InvokeWithLayerRequest(
        layer=layer,
        query=functions.InitConnectionRequest(
            api_id=server.api_id,
            device_model="raw",
            system_version="1",
            app_version="1",
            system_lang_code="en",
            lang_pack="",
            lang_code="en",
            query=query,
        ),
    )


async def _new_key_session(
    server: MTProtoTestServer, *, padded: bool = False, **kwargs: object
) -> Session:
    link = await RawLink.open(server.host, server.port, padded=padded)
    with anyio.fail_after(STEP):
        key = await create_auth_key(link, server.public_key_pem, **kwargs)  # type: ignore[arg-type]
    return Session(link, key.key, key.salt)


# 1. req_DH_params: RSA_PAD and the sha1 form, p_q_inner_data and _dc ------------------


@pytest.mark.parametrize("form", ["rsa_pad", "sha1"])
@pytest.mark.parametrize("inner", ["p_q_inner_data", "p_q_inner_data_dc"])
async def test_auth_key_is_created_from_either_rsa_form_and_inner_constructor(
    mtproto_server: MTProtoTestServer, form: str, inner: str
) -> None:
    session = await _new_key_session(mtproto_server, form=form, inner=inner)
    async with session.link.stream:
        _, pong = await session.call(functions.PingRequest(ping_id=7))
        assert isinstance(pong, types.Pong)
        assert pong.ping_id == 7
        assert any(r.key == session.key for r in mtproto_server._world.auth_keys.values())


@pytest.mark.parametrize("dc", [2, 10002, -2])
async def test_p_q_inner_data_dc_naming_this_dc_is_accepted(
    mtproto_server: MTProtoTestServer, dc: int
) -> None:
    """The listener's DC id, its test-mode id (+10000) and its media id (negative)."""
    session = await _new_key_session(mtproto_server, inner="p_q_inner_data_dc", dc=dc)
    async with session.link.stream:
        _, pong = await session.call(functions.PingRequest(ping_id=1))
        assert isinstance(pong, types.Pong)


async def _refused_exchange(server: MTProtoTestServer, **kwargs: object) -> None:
    """The exchange is refused: the server closes the link instead of answering."""
    link = await RawLink.open(server.host, server.port)
    async with link.stream:
        with anyio.fail_after(STEP), pytest.raises((anyio.EndOfStream, anyio.IncompleteRead)):
            await create_auth_key(link, server.public_key_pem, **kwargs)  # type: ignore[arg-type]


async def test_p_q_inner_data_dc_naming_another_dc_is_refused_with_a_warning(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=SERVER_LOG):
        await _refused_exchange(mtproto_server, inner="p_q_inner_data_dc", dc=4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dc 4" in m and "dc 2" in m for m in warnings), warnings


async def test_temporary_auth_key_is_refused_with_a_warning(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=SERVER_LOG):
        await _refused_exchange(mtproto_server, inner="p_q_inner_data_temp_dc")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("temporary auth key" in m for m in warnings), warnings
    assert not mtproto_server._world.auth_keys


async def test_undecryptable_req_dh_params_closes_the_link_and_says_why_at_debug(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    link = await RawLink.open(mtproto_server.host, mtproto_server.port)
    nonce = int.from_bytes(os.urandom(16), "little", signed=True)
    with caplog.at_level(logging.DEBUG, logger=SERVER_LOG):
        async with link.stream:
            res_pq = await plain_call(link, functions.ReqPqMultiRequest(nonce=nonce))
            p, q = factor(int.from_bytes(res_pq.pq, "big"))
            garbage = b"\x00" + os.urandom(255)  # below any 2048-bit modulus
            with anyio.fail_after(STEP), pytest.raises((anyio.EndOfStream, anyio.IncompleteRead)):
                await plain_call(
                    link,
                    functions.ReqDHParamsRequest(
                        nonce=nonce,
                        server_nonce=res_pq.server_nonce,
                        p=big_endian(p),
                        q=big_endian(q),
                        public_key_fingerprint=res_pq.server_public_key_fingerprints[0],
                        encrypted_data=garbage,
                    ),
                )
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("undecryptable req_DH_params" in m for m in debug), debug


# 2. Padded intermediate: 0-15 padding bytes both ways --------------------------------


async def test_padded_intermediate_accepts_every_padding_from_0_to_15(
    mtproto_server: MTProtoTestServer,
) -> None:
    sizes = itertools.cycle(range(16))
    link = await RawLink.open(
        mtproto_server.host, mtproto_server.port, padded=True, padding=lambda: next(sizes)
    )
    async with link.stream:
        with anyio.fail_after(STEP):
            key = await create_auth_key(link, mtproto_server.public_key_pem)
        session = Session(link, key.key, key.salt)
        for ping_id in range(32):  # every padding size twice, plain packets included above
            _, pong = await session.call(functions.PingRequest(ping_id=ping_id))
            assert isinstance(pong, types.Pong)
            assert pong.ping_id == ping_id
        # The client has shown it strips padding by the spec's rule: the server pads 0-15.
        assert max(link.received_padding) > 3
        assert max(link.received_padding) <= 15


async def test_padded_intermediate_pads_at_most_3_bytes_for_a_client_that_does(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Telethon strips only len % 4; it never sees more (its AES-IGE call would abort)."""
    sizes = itertools.cycle(range(4))
    link = await RawLink.open(
        mtproto_server.host, mtproto_server.port, padded=True, padding=lambda: next(sizes)
    )
    async with link.stream:
        with anyio.fail_after(STEP):
            key = await create_auth_key(link, mtproto_server.public_key_pem)
        session = Session(link, key.key, key.salt)
        for ping_id in range(32):
            await session.call(functions.PingRequest(ping_id=ping_id))
        assert len(link.received_padding) >= 35
        assert max(link.received_padding) <= 3


async def test_padding_beyond_15_bytes_closes_the_link(mtproto_server: MTProtoTestServer) -> None:
    link = await RawLink.open(
        mtproto_server.host, mtproto_server.port, padded=True, padding=lambda: 16
    )
    async with link.stream:
        nonce = int.from_bytes(os.urandom(16), "little", signed=True)
        with anyio.fail_after(STEP), pytest.raises((anyio.EndOfStream, anyio.IncompleteRead)):
            await plain_call(link, functions.ReqPqMultiRequest(nonce=nonce))


# 3. Pings: any seqno parity, and inside invokeWithLayer(initConnection(...)) ------------


@pytest.mark.parametrize("content_related", [True, False])
@pytest.mark.parametrize("kind", ["ping", "ping_delay_disconnect"])
async def test_ping_gets_a_pong_whatever_its_seqno_parity(
    mtproto_server: MTProtoTestServer, content_related: bool, kind: str
) -> None:
    session = await _new_key_session(mtproto_server)
    request = (
        functions.PingRequest(ping_id=11)
        if kind == "ping"
        else functions.PingDelayDisconnectRequest(ping_id=11, disconnect_delay=60)
    )
    async with session.link.stream:
        _, pong = await session.call(request, content_related=content_related)
        assert isinstance(pong, types.Pong)
        assert pong.ping_id == 11


async def test_ping_wrapped_in_init_connection_gets_its_pong_as_the_rpc_result(
    mtproto_server: MTProtoTestServer,
) -> None:
    session = await _new_key_session(mtproto_server)
    async with session.link.stream:
        _message, answer = await session.call(
            _init(mtproto_server, functions.PingRequest(ping_id=5))
        )
        assert isinstance(answer, RpcResult)
        assert answer.error is None
        pong = rpc_result_obj(answer)
        assert isinstance(pong, types.Pong)
        assert pong.ping_id == 5
        # initConnection's bookkeeping was applied: a bare request is served now.
        _, config = await session.call(functions.help.GetConfigRequest())
        assert isinstance(config, RpcResult)
        assert config.error is None
        assert isinstance(rpc_result_obj(config), types.Config)


async def test_wrapped_ping_delay_disconnect_sets_the_disconnect_deadline(
    mtproto_server: MTProtoTestServer,
) -> None:
    session = await _new_key_session(mtproto_server)
    async with session.link.stream:
        ping = functions.PingDelayDisconnectRequest(ping_id=9, disconnect_delay=1)
        _, answer = await session.call(_init(mtproto_server, ping))
        assert isinstance(rpc_result_obj(answer), types.Pong)
        # No further ping: the server closes the link once the deadline passes.
        with anyio.fail_after(STEP), pytest.raises((anyio.EndOfStream, anyio.IncompleteRead)):
            await _read_until_closed(session)


async def _read_until_closed(session: Session) -> None:
    while True:
        await session.receive()


# 4. The first salt comes from the nonces ----------------------------------------------


async def test_first_message_with_the_salt_from_the_nonces_gets_no_bad_server_salt(
    mtproto_server: MTProtoTestServer,
) -> None:
    session = await _new_key_session(mtproto_server)
    async with session.link.stream:
        msg_id = await session.send(bytes(functions.PingRequest(ping_id=3)))
        with anyio.fail_after(STEP):
            answer = (await session.answer_to(msg_id)).obj()
        assert isinstance(answer, types.Pong), answer
        (record,) = mtproto_server._world.auth_keys.values()
        assert record.salt == session.salt


async def test_salt_zero_gets_bad_server_salt_with_the_salt_from_the_nonces(
    mtproto_server: MTProtoTestServer,
) -> None:
    """What Telethon does: start with salt 0, learn the salt, resend."""
    session = await _new_key_session(mtproto_server)
    derived, session.salt = session.salt, 0
    async with session.link.stream:
        msg_id = await session.send(bytes(functions.PingRequest(ping_id=3)))
        with anyio.fail_after(STEP):
            answer = (await session.answer_to(msg_id)).obj()
        assert isinstance(answer, types.BadServerSalt)
        assert answer.new_server_salt == derived


# 6. No pushes to a stale session ------------------------------------------------------


async def test_late_message_of_an_old_session_does_not_take_the_pushes_of_the_new_one(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    key = mtproto_server.issue_auth_key(alice.id)
    old_id, new_id = 1111, 2222
    # The old link: session 1111, then the link dies (a reconnect).
    old = Session(await RawLink.open(mtproto_server.host, mtproto_server.port), key, 0, old_id)
    async with old.link.stream:
        await old.call(functions.PingRequest(ping_id=1))
    # The new link: session 2222, then a late message of session 1111 arrives on it.
    new = Session(
        await RawLink.open(mtproto_server.host, mtproto_server.port), key, old.salt, new_id
    )
    async with new.link.stream:
        await new.call(functions.PingRequest(ping_id=2))
        late = await new.send(bytes(functions.PingRequest(ping_id=3)), session_id=old_id)
        with anyio.fail_after(STEP):
            answer = await new.answer_to(late)
        # A direct answer goes back under the session id the request named.
        assert answer.session_id == old_id
        assert isinstance(answer.obj(), types.Pong)
        new.backlog.clear()
        await mtproto_server.send_message(bob.id, alice.id, "for the current session only")
        # Anything pushed for the update is queued before this ping's pong.
        await new.call(functions.PingRequest(ping_id=4))
        pushed = [m for m in new.backlog if isinstance(m.obj(), types.Updates)]
        assert [m.session_id for m in pushed] == [new_id]
        assert all(m.session_id == new_id for m in new.backlog)


async def test_session_that_moves_to_a_new_link_takes_its_pushes_along(
    mtproto_server: MTProtoTestServer,
) -> None:
    """Clients that keep one session id across reconnects (TDLib, mtcute) get pushes."""
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    key = mtproto_server.issue_auth_key(alice.id)
    first = Session(await RawLink.open(mtproto_server.host, mtproto_server.port), key, 0, 77)
    async with first.link.stream:
        await first.call(functions.PingRequest(ping_id=1))
    second = Session(
        await RawLink.open(mtproto_server.host, mtproto_server.port), key, first.salt, 77
    )
    async with second.link.stream:
        await second.call(functions.PingRequest(ping_id=2))
        await mtproto_server.send_message(bob.id, alice.id, "hello")
        await second.call(functions.PingRequest(ping_id=3))
        pushed = [m for m in second.backlog if isinstance(m.obj(), types.Updates)]
        assert [m.session_id for m in pushed] == [77]


# 7. Layers: the server speaks Telethon's layer and says so ------------------------------


async def test_another_layer_is_refused_with_an_error_naming_the_servers_layer(
    mtproto_server: MTProtoTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    session = await _new_key_session(mtproto_server)
    other = LAYER - 31
    async with session.link.stream:
        with caplog.at_level(logging.WARNING, logger=SERVER_LOG):
            _, answer = await session.call(
                _init(mtproto_server, functions.help.GetConfigRequest(), layer=other)
            )
            error = rpc_result_obj(answer)
            assert isinstance(error, types.RpcError)
            assert error.error_code == 400
            assert error.error_message.startswith("CONNECTION_LAYER_INVALID")
            assert f"layer {LAYER}" in error.error_message
            assert str(other) in error.error_message
            # The key's layer is recorded: bare requests after it are refused alike...
            _, bare = await session.call(functions.help.GetConfigRequest())
            assert rpc_result_obj(bare).error_message == error.error_message
            # ...pings are MTProto, not API, and are answered in any layer...
            _, pong = await session.call(functions.PingRequest(ping_id=1))
            assert isinstance(pong, types.Pong)
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "layer" in r.getMessage()
        ]
        assert len(warnings) == 1, warnings  # once per key
        assert str(LAYER) in warnings[0]
        assert str(other) in warnings[0]
        # ...and declaring the server's layer serves the key again.
        _, config = await session.call(_init(mtproto_server, functions.help.GetConfigRequest()))
        assert isinstance(rpc_result_obj(config), types.Config)
        (record,) = mtproto_server._world.auth_keys.values()
        assert record.layer == LAYER


async def test_unreadable_query_of_another_layer_gets_the_layer_error(
    mtproto_server: MTProtoTestServer,
) -> None:
    """A constructor that exists only in the client's layer still gets a clear answer."""
    session = await _new_key_session(mtproto_server)
    other = LAYER + 1
    body = struct.pack("<Ii", 0xDA9B0D0D, other) + struct.pack("<I", 0x0BADC0DE) + bytes(16)
    async with session.link.stream:
        _, answer = await session.call(body)
        error = rpc_result_obj(answer)
        assert isinstance(error, types.RpcError)
        assert error.error_message.startswith("CONNECTION_LAYER_INVALID")
        assert f"layer {LAYER}" in error.error_message


async def test_unreadable_query_in_the_servers_layer_is_still_input_constructor_invalid(
    mtproto_server: MTProtoTestServer,
) -> None:
    session = await _new_key_session(mtproto_server)
    body = struct.pack("<Ii", 0xDA9B0D0D, LAYER) + struct.pack("<I", 0x0BADC0DE) + bytes(16)
    async with session.link.stream:
        _, answer = await session.call(body)
        assert rpc_result_obj(answer).error_message == "INPUT_CONSTRUCTOR_INVALID"


# 5. Telegram's username rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "rule"),
    [
        ("bob", "5-32 characters"),
        ("a" * 33, "5-32 characters"),
        ("1alice", "start with a letter"),
        ("_alice", "start with a letter"),
        ("ali-ce", "only letters, digits and _"),
        ("alicé", "only letters, digits and _"),
        ("alice_", "not end with _"),
        ("ali__ce", "two _ in a row"),
    ],
)
def test_create_user_refuses_usernames_telegram_refuses(username: str, rule: str) -> None:
    server = MTProtoTestServer()
    with pytest.raises(ValueError, match=rule) as info:
        server.create_user("+15550001", "Alice", username=username)
    assert repr(username) in str(info.value)
    with pytest.raises(ValueError, match=rule):
        server.create_bot(username)


@pytest.mark.parametrize("username", ["echo_bot_x", "helper"])
def test_bot_usernames_must_end_in_bot(username: str) -> None:
    server = MTProtoTestServer()
    with pytest.raises(ValueError, match="must end in 'bot'") as info:
        server.create_bot(username)
    assert repr(username) in str(info.value)


def test_valid_usernames_are_accepted() -> None:
    server = MTProtoTestServer()
    assert server.create_user("+15550001", "A", username="alice").username == "alice"
    assert server.create_user("+15550002", "B", username="B0b_by_9").username == "B0b_by_9"
    assert server.create_user("+15550003", "C", username="c" * 32).username == "c" * 32
    assert server.create_bot("echo_bot").username == "echo_bot"
    assert server.create_bot("EchoBOT").username == "EchoBOT"


async def test_resolve_username_with_an_invalid_username_is_username_invalid(
    mtproto_server: MTProtoTestServer,
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    session = Session(
        await RawLink.open(mtproto_server.host, mtproto_server.port),
        mtproto_server.issue_auth_key(alice.id),
        0,
    )
    async with session.link.stream:
        for name, error in [("bob", "USERNAME_INVALID"), ("nobody_here", "USERNAME_NOT_OCCUPIED")]:
            request = functions.contacts.ResolveUsernameRequest(username=name)
            _, answer = await session.call(_init(mtproto_server, request))
            assert rpc_result_obj(answer).error_message == error
