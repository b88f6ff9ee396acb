"""The MTProto layer of the test server: what it does with each packet a link reads.

Plain messages go to the auth-key exchange; encrypted ones are decrypted and checked
(msg_key, msg_id, salt), unpacked (containers, gzip) and answered: pings, service
messages, and API requests through `._api`. A mixin of `MTProtoTestServer`, so the
server's own module stays about lifecycle and control.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from telethon.extensions import BinaryReader
from telethon.tl import TLRequest, functions, types

from . import _crypto as c
from . import _tl
from ._api import Api, CallContext, RpcFailure
from ._handshake import HandshakeError, Handshakes
from ._key_links import KeyLinks
from ._layers import LayerCheck, declared_layer
from ._links import _Link, _Out, _Session
from ._records import RequestRecord
from ._transport import TransportError
from ._world import AuthKeyRecord, World

if TYPE_CHECKING:
    from ._account_control import _Injected

log = logging.getLogger("resilient_tg.testing.server")

# Client msg_ids older than this, or further ahead, get bad_msg_notification 16/17.
MSG_ID_TOO_OLD = 300
MSG_ID_TOO_NEW = 30
MAX_SESSIONS = 20_000
_PINGS = (functions.PingRequest, functions.PingDelayDisconnectRequest)
# Wrappers a request may come in; the server answers the query inside.
_WRAPPERS = (
    functions.InvokeWithLayerRequest,
    functions.InitConnectionRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeAfterMsgsRequest,
    functions.InvokeWithTakeoutRequest,
    functions.InvokeWithMessagesRangeRequest,
)


class MessageHandling:
    """Mixed into MTProtoTestServer: packets in, answers out."""

    if TYPE_CHECKING:
        _world: World
        _handshakes: Handshakes | None
        _api: Api
        _layer_check: LayerCheck
        _arrival: tuple[_Session, _Link] | None
        _sessions: collections.OrderedDict[tuple[bytes, int], _Session]
        _requests: collections.deque[RequestRecord]
        _injected: dict[str, collections.deque[_Injected]]
        _key_links: KeyLinks

    def _on_packet(self, link: _Link, packet: bytes) -> None:
        if len(packet) < 8:
            raise TransportError("packet shorter than an auth_key_id")
        if packet[:8] == b"\0" * 8:
            self._on_plain(link, packet)
        else:
            self._on_encrypted(link, packet)

    def _on_plain(self, link: _Link, packet: bytes) -> None:
        if len(packet) < 20:
            raise TransportError("plain message too short")
        (length,) = struct.unpack("<i", packet[16:20])
        if length <= 0 or length > len(packet) - 20:
            raise TransportError("plain message length out of range")
        try:
            request = BinaryReader(packet[20 : 20 + length]).tgread_object()
        except Exception as exc:
            raise HandshakeError("unreadable plain message") from exc
        assert self._handshakes is not None
        response, new_key = self._handshakes.handle(request, dc_id=link.dc_id)
        if new_key is not None:
            key_id = c.auth_key_id(new_key.key)
            self._world.auth_keys[key_id] = AuthKeyRecord(
                key=new_key.key,
                key_id=key_id,
                created=time.time(),
                salt=new_key.salt,
                dc_id=link.dc_id,
            )
            log.debug("new auth key %016x", _key_id_int(key_id))
        body = bytes(response)  # type: ignore[call-overload]
        link.push(
            _Out(kind="raw", body=struct.pack("<qqi", 0, link.plain_msg_id(), len(body)) + body)
        )

    def _on_encrypted(self, link: _Link, packet: bytes) -> None:
        key_id = packet[:8]
        record = self._world.auth_keys.get(key_id)
        if record is None or record.dc_id != link.dc_id:  # keys are known on their DC only
            log.debug("unknown auth key %016x from %s:%d: -404", _key_id_int(key_id), *link.peer)
            link.push(_Out(kind="raw", body=struct.pack("<i", -404)))
            link.push(_Out(kind="close"))
            return
        if len(packet) < 24 + 48 or (len(packet) - 24) % 16:
            raise TransportError("encrypted message size is not valid")
        msg_key = packet[8:24]
        aes_key, aes_iv = c.message_key_iv(record.key, msg_key, from_client=True)
        plain = c.ige_decrypt(packet[24:], aes_key, aes_iv)
        if c.msg_key_for(record.key, plain, from_client=True) != msg_key:
            raise TransportError("msg_key mismatch")
        salt, session_id, msg_id, seqno, length = struct.unpack("<qqqii", plain[:32])
        padding = len(plain) - 32 - length
        if length < 4 or not 12 <= padding <= 1024:
            raise TransportError("encrypted message length or padding out of range")
        session = self._session(record, session_id, link)
        self._arrival = (session, link)
        try:
            self._on_client_message(session, record, plain, salt, msg_id, seqno, length)
        finally:
            self._arrival = None

    def _on_client_message(
        self,
        session: _Session,
        record: AuthKeyRecord,
        plain: bytes,
        salt: int,
        msg_id: int,
        seqno: int,
        length: int,
    ) -> None:
        if not self._check_msg_id(session, msg_id, seqno):
            return
        if salt != record.salt:
            self._notify(
                session,
                types.BadServerSalt(
                    bad_msg_id=msg_id,
                    bad_msg_seqno=seqno,
                    error_code=48,
                    new_server_salt=record.salt,
                ),
            )
            return
        if session.seen(msg_id):
            return
        if not session.announced:
            session.announced = True
            self._send(
                session,
                bytes(
                    types.NewSessionCreated(
                        first_msg_id=msg_id,
                        unique_id=struct.unpack("<q", os.urandom(8))[0],
                        server_salt=record.salt,
                    )
                ),
                content_related=True,
            )
        body = plain[32 : 32 + length]
        if body[:4] == struct.pack("<I", _tl.MSG_CONTAINER):
            self._on_container(session, msg_id, seqno, body)
        else:
            self._on_message(session, msg_id, seqno, body)

    def _session(self, record: AuthKeyRecord, session_id: int, link: _Link) -> _Session:
        """The session a message names, made the link's current one unless it is older.

        A link serves its newest session (the one the server saw first most recently):
        after a reconnect, a late message of the old session arriving on the new link
        is answered there (see _send) but does not take the link back, so updates
        pushed for the old session id never reach it. A session that moves to a newer
        link (clients that keep their session id across reconnects) moves its pushes.
        The link counts for its session's auth key in the record of links per key.
        """
        key = (record.key_id, session_id)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(record, session_id)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        session.record = record
        current = link.session
        if current is None or current.born <= session.born:
            if current is not None and current is not session and current.link is link:
                current.link = None
            session.link = link
            link.session = session
            self._key_links.attribute(link, _key_id_int(record.key_id))
        return session

    def _check_msg_id(self, session: _Session, msg_id: int, seqno: int) -> bool:
        code = 0
        if msg_id % 4:
            code = 18
        else:
            delta = (msg_id >> 32) - time.time()
            if delta < -MSG_ID_TOO_OLD:
                code = 16
            elif delta > MSG_ID_TOO_NEW:
                code = 17
        if code:
            self._notify(
                session,
                types.BadMsgNotification(bad_msg_id=msg_id, bad_msg_seqno=seqno, error_code=code),
            )
            return False
        return True

    def _on_container(self, session: _Session, msg_id: int, seqno: int, body: bytes) -> None:
        try:
            (count,) = struct.unpack("<i", body[4:8])
            offset, inner = 8, []
            if not 0 <= count <= 1024 or seqno % 2:
                raise ValueError("container count or seqno")
            for _ in range(count):
                inner_id, inner_seq, size = struct.unpack("<qii", body[offset : offset + 16])
                offset += 16
                if size < 4 or offset + size > len(body):
                    raise ValueError("inner message size")
                inner.append((inner_id, inner_seq, body[offset : offset + size]))
                offset += size
        except (struct.error, ValueError):
            self._notify(
                session,
                types.BadMsgNotification(bad_msg_id=msg_id, bad_msg_seqno=seqno, error_code=64),
            )
            return
        for inner_id, inner_seq, inner_body in inner:
            if not self._check_msg_id(session, inner_id, inner_seq) or session.seen(inner_id):
                continue
            if inner_body[:4] == struct.pack("<I", _tl.MSG_CONTAINER):
                continue  # containers do not nest
            self._on_message(session, inner_id, inner_seq, inner_body)

    def _on_message(self, session: _Session, msg_id: int, seqno: int, body: bytes) -> None:
        constructor = body[:4]
        if constructor == struct.pack("<I", _tl.MSGS_ACK):
            return
        if constructor == struct.pack("<I", _tl.GZIP_PACKED):
            try:
                packed = BinaryReader(body[4:]).tgread_bytes()
                body = _tl.inflate(packed)
            except Exception:  # noqa: BLE001 - a broken gzip body is the peer's problem
                self._answer_error(session, msg_id, seqno, 400, "INPUT_REQUEST_INVALID")
                return
        try:
            obj = BinaryReader(body).tgread_object()
        except Exception:  # noqa: BLE001 - unknown constructor or truncated body
            layer = declared_layer(body)
            if layer is not None:
                # A query of another layer may not parse in ours: say which layer we speak.
                session.record.layer = layer
            refusal = self._layer_check.refusal(session.record.key_id, layer)
            self._answer_error(session, msg_id, seqno, 400, refusal or "INPUT_CONSTRUCTOR_INVALID")
            return
        if isinstance(obj, _PINGS):
            # Pings are answered whatever their seqno's parity (clients differ there).
            self._pong(session, msg_id, obj)
            return
        if isinstance(obj, TLRequest) and seqno % 2 == 0:
            self._notify(
                session,
                types.BadMsgNotification(bad_msg_id=msg_id, bad_msg_seqno=seqno, error_code=35),
            )
            return
        if isinstance(obj, functions.DestroySessionRequest):
            self._destroy_session(session, obj.session_id)
        elif isinstance(obj, functions.GetFutureSaltsRequest):
            self._future_salts(session, msg_id, obj.num)
        elif isinstance(obj, (types.MsgsStateReq, types.MsgResendReq)):
            info = bytes([1]) * len(obj.msg_ids)
            self._send(
                session, bytes(types.MsgsStateInfo(req_msg_id=msg_id, info=info)), response=True
            )
        elif isinstance(obj, functions.RpcDropAnswerRequest):
            self._send(
                session, _tl.rpc_result(msg_id, bytes(types.RpcAnswerUnknown())), response=True
            )
        elif isinstance(obj, TLRequest):
            self._rpc(session, msg_id, obj)
        # Anything else (msgs_state_info, msgs_all_info...) needs no answer.

    def _pong(self, session: _Session, msg_id: int, ping: Any, *, wrapped: bool = False) -> None:
        """Answer ping or ping_delay_disconnect; inside invokeWith* wrappers the pong
        comes as the rpc_result, as Telegram answers it there."""
        if isinstance(ping, functions.PingDelayDisconnectRequest):
            arrival = self._arrival[1] if self._arrival is not None else session.link
            if arrival is not None:
                arrival.set_disconnect_delay(ping.disconnect_delay)
        pong = bytes(types.Pong(msg_id=msg_id, ping_id=ping.ping_id))
        self._send(session, _tl.rpc_result(msg_id, pong) if wrapped else pong, response=True)

    def _rpc(self, session: _Session, msg_id: int, request: Any) -> None:
        record = session.record
        dc_id = session.link.dc_id if session.link is not None else record.dc_id
        ctx = CallContext(record=record, session_id=session.session_id, dc_id=dc_id)
        inner = request
        try:
            while isinstance(inner, _WRAPPERS):
                if isinstance(inner, functions.InvokeWithLayerRequest):
                    record.layer = inner.layer
                elif isinstance(inner, functions.InitConnectionRequest):
                    self._api.check_app(inner.api_id, None)
                    record.api_id = inner.api_id
                inner = inner.query
            if isinstance(inner, _PINGS):
                self._pong(session, msg_id, inner, wrapped=True)
                return
            self._requests.append(
                RequestRecord(
                    method=_tl.tl_name(inner),
                    auth_key_id=_key_id_int(record.key_id),
                    session_id=session.session_id,
                    msg_id=msg_id,
                    user_id=record.user_id,
                    at=time.time(),
                    dc_id=dc_id,
                )
            )
            refusal = self._layer_check.refusal(record.key_id, record.layer)
            if refusal is not None:
                raise RpcFailure(400, refusal)
            self._raise_injected(_tl.tl_name(inner))
            if record.api_id is None:
                raise RpcFailure(400, "CONNECTION_NOT_INITED")
            result = self._api.call(inner, ctx)
            body = _tl.rpc_result(msg_id, _tl.serialize(result))
        except RpcFailure as failure:
            log.debug("%s -> %d %s", _tl.tl_name(inner), failure.code, failure.message)
            body = _tl.rpc_error(msg_id, failure.code, failure.message)
        except Exception:
            log.exception("test server failed to answer %s", _tl.tl_name(inner))
            body = _tl.rpc_error(msg_id, 500, "INTERNAL")
        self._send(session, body, response=True)

    def _raise_injected(self, method: str) -> None:
        queue = self._injected.get(method)
        if not queue:
            return
        injected = queue[0]
        injected.remaining -= 1
        if injected.remaining <= 0:
            queue.popleft()
        raise RpcFailure(injected.code, injected.error)

    def _answer_error(
        self, session: _Session, msg_id: int, seqno: int, code: int, msg: str
    ) -> None:
        if seqno % 2:  # only content-related messages expect an answer
            self._send(session, _tl.rpc_error(msg_id, code, msg), response=True)

    def _destroy_session(self, session: _Session, target: int) -> None:
        key = (session.record.key_id, target)
        gone = self._sessions.pop(key, None) if target != session.session_id else None
        answer = (
            types.DestroySessionOk(session_id=target)
            if gone is not None
            else types.DestroySessionNone(session_id=target)
        )
        if gone is not None and gone.link is not None and gone.link is not session.link:
            gone.link.close()
        self._send(session, bytes(answer), response=True)

    def _future_salts(self, session: _Session, msg_id: int, num: int) -> None:
        now = int(time.time())
        salts = [
            types.FutureSalt(
                valid_since=_tl_date(now + i * 3600),
                valid_until=_tl_date(now + (i + 1) * 3600),
                salt=session.record.salt,
            )
            for i in range(max(1, min(num, 64)))
        ]
        self._send(
            session,
            bytes(types.FutureSalts(req_msg_id=msg_id, now=now, salts=salts)),
            response=True,
        )

    # Sending --------------------------------------------------------------------------

    def _send(
        self,
        session: _Session,
        body: bytes,
        *,
        content_related: bool = True,
        response: bool = False,
    ) -> None:
        # Pushes go to the link the session is current on, or nowhere. A response is a
        # direct answer to the message being handled and goes to the link that message
        # came on, even when that link now serves a newer session: these are the only
        # messages a link carries under a session id other than its current one.
        link = session.link
        arrival = self._arrival
        if response and arrival is not None and arrival[0] is session:
            link = arrival[1]
        if link is not None:
            link.push(
                _Out(
                    kind="message",
                    session=session,
                    body=body,
                    content_related=content_related,
                    response=response,
                )
            )

    def _notify(self, session: _Session, obj: Any) -> None:
        """Service notifications (bad salt, bad msg) are not content-related."""
        self._send(session, bytes(obj), content_related=False, response=True)

    def _encrypt(self, item: _Out) -> bytes:
        session = item.session
        assert session is not None
        record = session.record
        msg_id = session.next_msg_id(response=item.response)
        seqno = session.next_seqno(content_related=item.content_related)
        plain = (
            struct.pack("<qqqii", record.salt, session.session_id, msg_id, seqno, len(item.body))
            + item.body
        )
        plain += c.random_padding(len(plain))
        msg_key = c.msg_key_for(record.key, plain, from_client=False)
        aes_key, aes_iv = c.message_key_iv(record.key, msg_key, from_client=False)
        return record.key_id + msg_key + c.ige_encrypt(plain, aes_key, aes_iv)


def _key_id_int(key_id: bytes) -> int:
    value: int = struct.unpack("<Q", key_id)[0]
    return value


def _tl_date(timestamp: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
