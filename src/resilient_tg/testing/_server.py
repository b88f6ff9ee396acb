"""MTProtoTestServer: a local Telegram-like server that unmodified Telethon talks to.

It speaks real MTProto 2.0 over TCP (every transport Telethon has), creates auth keys
by the DH exchange with its own RSA key, and implements the part of the Telegram API
that normal client work needs, with control calls for tests: create accounts, read
login codes, send messages, revoke keys, inject RPC errors, restart.

    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        client = TelegramClient(server.telethon_session(), server.api_id, server.api_hash)
        await client.connect()
        await client.sign_in(alice.phone, code=...)   # see login_code()
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import attrs
from telethon.extensions import BinaryReader
from telethon.sessions import MemorySession
from telethon.tl import TLRequest, functions, types

from . import _crypto as c
from . import _srp, _tl
from ._api import Api, CallContext, RpcFailure
from ._dcs import DcControl, ExportedAuth, dc_range
from ._files_control import FileControl
from ._handshake import HandshakeError, Handshakes
from ._links import DcListener, _Link, _Out
from ._records import ConnectionInfo, RequestRecord, TestBot, TestUser
from ._transport import TransportError
from ._trust import trusted_key
from ._world import Account, AuthKeyRecord, Password, StoredMessage, World

__all__ = ["ConnectionInfo", "MTProtoTestServer", "RequestRecord", "TestBot", "TestUser"]

log = logging.getLogger("resilient_tg.testing.server")

KEY_FILE = "server_key.pem"
# Client msg_ids older than this, or further ahead, get bad_msg_notification 16/17.
MSG_ID_TOO_OLD = 300
MSG_ID_TOO_NEW = 30
RECENT_MSG_IDS = 1000
MAX_SESSIONS = 20_000
MAX_RECORDED_REQUESTS = 100_000
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


@attrs.define(eq=False)
class _Injected:
    error: str
    code: int
    remaining: int


class _Session:
    """Server-side MTProto session: (auth key, session id), with msg_id and seqno state."""

    def __init__(self, record: AuthKeyRecord, session_id: int) -> None:
        self.record = record
        self.session_id = session_id
        self.link: _Link | None = None
        self.announced = False
        self._seen: collections.deque[int] = collections.deque(maxlen=RECENT_MSG_IDS)
        self._seen_set: set[int] = set()
        self._last_msg_id = 0
        self._seq = 0

    def seen(self, msg_id: int) -> bool:
        """Remember a client msg_id; True if it was seen before (a duplicate)."""
        if msg_id in self._seen_set:
            return True
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(msg_id)
        self._seen_set.add(msg_id)
        return False

    def next_msg_id(self, *, response: bool) -> int:
        # Server msg_ids are odd: 1 mod 4 for responses, 3 mod 4 for everything else.
        base = int(time.time() * 2**32) & ~3
        if base <= self._last_msg_id:
            base = (self._last_msg_id & ~3) + 4
        msg_id = base | (1 if response else 3)
        self._last_msg_id = msg_id
        return msg_id

    def next_seqno(self, *, content_related: bool) -> int:
        if content_related:
            self._seq += 1
            return self._seq * 2 - 1
        return self._seq * 2


class MTProtoTestServer(DcControl, FileControl):
    """A local Telegram-like MTProto 2.0 server for tests and offline development.

    ``data_dir`` keeps state (accounts, auth keys, messages, the RSA key) across
    `restart` and across processes; without it a restart forgets everything
    but the RSA key, so clients see their auth key rejected (-404) as after a real
    server losing its keys. State is written when the server stops or restarts.

    ``on_login_code(phone, code)`` is called for each code auth.sendCode "sends"
    (``phone`` is digits only), the way Telegram delivers it to the user's app.

    ``dcs=N`` (N > 1) serves DCs 1..N, each on its own port (``port`` is ``dc_id``'s;
    the others are picked by the OS and kept across `restart`); accounts are homed on
    a DC and clients asking another DC are sent there with *_MIGRATE_X (`._dcs`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        dc_id: int = 2,
        dcs: int = 1,
        api_id: int = 12345,
        api_hash: str | None = None,
        on_login_code: Callable[[str, str], None] | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if not 1 <= dc_id <= 1000:
            raise ValueError(f"dc_id must be in 1..1000, got {dc_id}")
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._host = host
        self._dc_id = dc_id
        self._dcs = {
            dc: DcListener(self, dc, host, port if dc == dc_id else 0)
            for dc in dc_range(dc_id, dcs)
        }
        self._network_dc: int | None = None
        self._exports: dict[bytes, ExportedAuth] = {}
        self._api_id = api_id
        self._api_hash_given = api_hash
        self._api_hash = api_hash or ""
        self._on_login_code = on_login_code
        self._world = World()
        self._key: c.ServerKey | None = None
        self._handshakes: Handshakes | None = None
        self._api = Api(self)
        self._sessions: collections.OrderedDict[tuple[bytes, int], _Session] = (
            collections.OrderedDict()
        )
        self._links: set[_Link] = set()
        self._links_total = 0
        self._injected: dict[str, collections.deque[_Injected]] = {}
        self._requests: collections.deque[RequestRecord] = collections.deque(
            maxlen=MAX_RECORDED_REQUESTS
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._untrust: Any = None
        self._running = False

    # Lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> MTProtoTestServer:
        if self._running:
            raise RuntimeError("MTProtoTestServer is already running")
        await anyio.to_thread.run_sync(self._load)
        assert self._key is not None
        self._untrust = trusted_key(self._key.public_pem)
        self._untrust.__enter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            for listener in self._dcs.values():
                await self._tg.start(listener.serve)
        except BaseException:
            await self._close_task_group()
            raise
        self._running = True
        for listener in self._dcs.values():
            log.info(
                "MTProto test server listening on %s:%d (dc %d)",
                listener.host,
                listener.port,
                listener.dc_id,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        try:
            await self._close_task_group()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._save)

    async def _close_task_group(self) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            if self._untrust is not None:
                self._untrust.__exit__(None, None, None)
                self._untrust = None

    async def restart(self) -> None:
        """Drop every link, reload state, listen again on the same host and port.

        With ``data_dir`` the state is written and read back (auth keys stay valid);
        without it every account, key and message is forgotten.
        """
        if not self._running or self._tg is None:
            raise RuntimeError("restart() needs a running server (use it inside 'async with')")
        for listener in self._dcs.values():
            await listener.stop()
        await anyio.to_thread.run_sync(self._save)
        self._sessions.clear()
        # Swap in the reloaded world at once: control calls made meanwhile (send_message
        # during a restart) never see a half-loaded state.
        self._world = await anyio.to_thread.run_sync(self._read_world)
        self._exports.clear()
        for listener in self._dcs.values():
            await self._tg.start(listener.serve)
        log.info("MTProto test server restarted on %s:%d", self._host, self.port)

    def _load(self) -> None:
        if self._data_dir is None:
            if self._key is None:
                self._key = _process_key()
            if not self._api_hash:
                self._api_hash = self._api_hash_given or secrets.token_hex(16)
            self._handshakes = Handshakes(self._key)
            return
        self._data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = self._data_dir / KEY_FILE
        if key_path.exists():
            self._key = c.ServerKey(key_path.read_bytes())
        else:
            self._key = c.ServerKey()
            _write_private(key_path, self._key.private_pem())
        self._world = World.load(self._data_dir)
        hash_path = self._data_dir / "api_hash"
        if self._api_hash_given:
            self._api_hash = self._api_hash_given
        elif hash_path.exists():
            self._api_hash = hash_path.read_text().strip()
        else:
            self._api_hash = secrets.token_hex(16)
            _write_private(hash_path, self._api_hash.encode())
        self._handshakes = Handshakes(self._key)

    def _read_world(self) -> World:
        return World.load(self._data_dir) if self._data_dir is not None else World()

    def _save(self) -> None:
        if self._data_dir is not None:
            self._world.save(self._data_dir)

    # Public properties ------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port of ``dc_id``'s listener (known once the server is running)."""
        return self._dcs[self._dc_id].port

    @property
    def dc_id(self) -> int:
        return self._dc_id

    @property
    def api_id(self) -> int:
        """The api_id the server accepts; others get API_ID_INVALID."""
        return self._api_id

    @property
    def api_hash(self) -> str:
        """The api_hash the server accepts (random per server unless given or in data_dir)."""
        return self._api_hash

    @property
    def public_key_pem(self) -> str:
        """The server's RSA public key, PKCS#1 PEM; see `trust_test_server`."""
        if self._key is None:
            raise RuntimeError("the server key exists once the server has started")
        return self._key.public_pem

    def telethon_session(self) -> MemorySession:
        """A fresh Telethon MemorySession pointed at this server."""
        session = MemorySession()
        session.set_dc(self._dc_id, self._host, self.port)
        return session

    @property
    def connections(self) -> tuple[ConnectionInfo, ...]:
        """The TCP links open now."""
        return tuple(
            ConnectionInfo(
                peer=link.peer,
                transport=link.framing.name if link.framing else "?",
                auth_key_id=_key_id_int(link.session.record.key_id) if link.session else None,
                session_id=link.session.session_id if link.session else None,
                opened_at=link.opened_at,
                dc_id=link.dc_id,
            )
            for link in list(self._links)
        )

    @property
    def links_total(self) -> int:
        """TCP links accepted since the server object was created (restarts included)."""
        return self._links_total

    @property
    def requests(self) -> list[RequestRecord]:
        """API requests received so far, oldest first (the last 100,000)."""
        return list(self._requests)

    def requests_for(self, method: str) -> list[RequestRecord]:
        """Recorded requests of one method, e.g. ``"messages.sendMessage"``."""
        _tl.request_class(method)
        return [r for r in self._requests if r.method == method]

    def clear_requests(self) -> None:
        self._requests.clear()

    # Control API ------------------------------------------------------------------

    def create_user(
        self, phone: str, first_name: str, username: str | None = None, *, dc_id: int | None = None
    ) -> TestUser:
        """Register an account homed on ``dc_id`` (default: the server's ``dc_id``);
        log in to it with a code from `login_code`."""
        account = self._world.new_account(
            first_name=first_name,
            phone=phone,
            username=username,
            bot=False,
            dc_id=self._home_dc(dc_id),
        )
        assert account.phone is not None
        return TestUser(
            id=account.id,
            phone=account.phone,
            first_name=account.first_name,
            username=account.username,
            access_hash=account.access_hash,
        )

    def create_bot(self, username: str, *, dc_id: int | None = None) -> TestBot:
        """Register a bot homed on ``dc_id`` (default: the server's ``dc_id``); log in
        with ``client.start(bot_token=bot.token)``."""
        if not username:
            raise ValueError("a bot needs a username")
        home = self._home_dc(dc_id)
        account = self._world.new_account(
            first_name=username, phone=None, username=username, bot=True, dc_id=home
        )
        assert account.token is not None
        return TestBot(
            id=account.id, username=username, token=account.token, access_hash=account.access_hash
        )

    def login_code(self, phone: str) -> str:
        """The code the last auth.sendCode for ``phone`` "sent"; LookupError if none was."""
        from ._world import normalize_phone

        code = self._world.login_codes.get(normalize_phone(phone))
        if code is None:
            raise LookupError(f"no login code was requested for {phone!r}")
        return code.code

    def set_password(self, user_id: int, password: str | None, hint: str | None = None) -> None:
        """Turn on 2FA for an account (None turns it off), as Telegram's SRP does it.

        Only the SRP verifier is kept (and written to ``data_dir``), never the password.
        Logging in then needs ``sign_in(password=...)`` after the code.
        """
        account = self._account(user_id)
        if account.bot:
            raise ValueError("bots have no 2FA password")
        if password is None:
            account.password = None
        else:
            if not isinstance(password, str) or not password:
                raise ValueError("password must be a non-empty string (None turns 2FA off)")
            salt1, salt2 = _srp.new_salts()
            account.password = Password(
                salt1=salt1,
                salt2=salt2,
                verifier=_srp.verifier(password, salt1, salt2),
                hint=hint,
            )
        # Challenges made for the old password are stale now (SRP_ID_INVALID).
        for srp_id, challenge in list(self._world.srp_challenges.items()):
            if challenge.account_id == user_id:
                del self._world.srp_challenges[srp_id]
        self._on_world_changed()

    async def send_message(self, from_id: int, to_id: int, text: str) -> int:
        """Send a private message as ``from_id``; updates go to every connected session
        of both accounts. Returns the message id in the recipient's box."""
        sender, recipient = self._account(from_id), self._account(to_id)
        if not text:
            raise ValueError("text must not be empty")
        out, incoming = self._world.deliver(sender, recipient, text, None)
        self._push_new_message(sender, recipient, out, incoming, skip_session=None)
        await anyio.lowlevel.checkpoint()
        return (incoming or out).id

    def revoke_auth_keys(self, user_id: int) -> int:
        """Log out every auth key of an account, on every DC; the next request on one
        gets AUTH_KEY_UNREGISTERED. Returns how many keys were revoked."""
        self._account(user_id)
        for token, export in list(self._exports.items()):
            if export.user_id == user_id:
                del self._exports[token]
        revoked = 0
        for record in self._world.auth_keys.values():
            if record.user_id == user_id:
                record.user_id = None
                revoked += 1
        return revoked

    def issue_auth_key(self, user_id: int | None = None, *, dc_id: int | None = None) -> bytes:
        """Register a fresh 256-byte auth key, logged in as ``user_id`` if given.

        Skips the DH exchange (about 0.1 s of CPU per client), for tests and benchmarks
        that start many clients: put the key in the client's session. The key belongs to
        ``dc_id``: by default the account's home DC, or the server's ``dc_id``.
        """
        home = None if user_id is None else self._account(user_id).dc_id
        key_dc = self._home_dc(dc_id if dc_id is not None else home)
        key = os.urandom(256)
        key_id = c.auth_key_id(key)
        self._world.auth_keys[key_id] = AuthKeyRecord(
            key=key,
            key_id=key_id,
            created=time.time(),
            salt=struct.unpack("<q", os.urandom(8))[0],
            user_id=user_id,
            dc_id=key_dc,
        )
        return key

    def forget_auth_keys(self) -> int:
        """Forget every auth key of every DC, so the next message on one gets transport
        error -404."""
        count = len(self._world.auth_keys)
        self._world.auth_keys.clear()
        self._sessions.clear()
        return count

    def inject_rpc_error(
        self, method: str, error: str, times: int = 1, *, code: int | None = None
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (TL name, e.g.
        ``"messages.sendMessage"``) with ``error`` (e.g. ``"FLOOD_WAIT_3"``).

        The error code follows Telegram's families (420 FLOOD_WAIT_*, 401 AUTH_KEY_*,
        500 INTERNAL...) unless ``code`` is given.
        """
        _tl.request_class(method)
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        if not error or not error.replace("_", "").isalnum() or error.upper() != error:
            raise ValueError(
                f"error must be a Telegram error string like 'FLOOD_WAIT_3', got {error!r}"
            )
        self._injected.setdefault(method, collections.deque()).append(
            _Injected(error=error, code=code or _tl.error_code_for(error), remaining=times)
        )

    def _account(self, user_id: int) -> Account:
        account = self._world.accounts.get(user_id)
        if account is None:
            raise LookupError(f"no account with id {user_id}")
        return account

    # Links --------------------------------------------------------------------------

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
        response, new_key = self._handshakes.handle(request)
        if new_key is not None:
            key_id = c.auth_key_id(new_key.key)
            self._world.auth_keys[key_id] = AuthKeyRecord(
                key=new_key.key,
                key_id=key_id,
                created=time.time(),
                salt=struct.unpack("<q", os.urandom(8))[0],
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
        key = (record.key_id, session_id)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(record, session_id)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        session.record = record
        session.link = link
        link.session = session
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
            self._answer_error(session, msg_id, seqno, 400, "INPUT_CONSTRUCTOR_INVALID")
            return
        if isinstance(obj, TLRequest) and seqno % 2 == 0:
            self._notify(
                session,
                types.BadMsgNotification(bad_msg_id=msg_id, bad_msg_seqno=seqno, error_code=35),
            )
            return
        if isinstance(obj, functions.PingRequest):
            self._send(
                session, bytes(types.Pong(msg_id=msg_id, ping_id=obj.ping_id)), response=True
            )
        elif isinstance(obj, functions.PingDelayDisconnectRequest):
            if session.link is not None:
                session.link.set_disconnect_delay(obj.disconnect_delay)
            self._send(
                session, bytes(types.Pong(msg_id=msg_id, ping_id=obj.ping_id)), response=True
            )
        elif isinstance(obj, functions.DestroySessionRequest):
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
        if session.link is not None:
            session.link.push(
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

    def _sessions_of(self, user_id: int) -> Iterator[_Session]:
        """The account's live sessions on its home DC (updates come from there only)."""
        account = self._world.accounts.get(user_id)
        home = account.dc_id if account is not None else self._dc_id
        for session in self._sessions.values():
            link = session.link
            if link is not None and session.record.user_id == user_id and link.dc_id == home:
                yield session

    def _push_new_message(
        self,
        sender: Account,
        recipient: Account,
        out: StoredMessage,
        incoming: StoredMessage | None,
        *,
        skip_session: int | None,
    ) -> None:
        if incoming is not None:
            body = bytes(self._api.new_message_updates(incoming, recipient, sender))
            for session in list(self._sessions_of(recipient.id)):
                self._send(session, body)
        body = bytes(self._api.new_message_updates(out, sender, recipient))
        for session in list(self._sessions_of(sender.id)):
            if session.session_id != skip_session:
                self._send(session, body)

    def _on_world_changed(self) -> None:
        """Hook for handlers that change durable state (written on stop and restart)."""

    def _login_code_sent(self, phone: str, code: str) -> None:
        """Deliver a login code to ``on_login_code``; its failure never fails sendCode."""
        if self._on_login_code is None:
            return
        try:
            self._on_login_code(phone, code)
        except Exception:
            log.exception("on_login_code callback failed")


def _key_id_int(key_id: bytes) -> int:
    value: int = struct.unpack("<Q", key_id)[0]
    return value


def _tl_date(timestamp: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


_PROCESS_KEY: c.ServerKey | None = None


def _process_key() -> c.ServerKey:
    """One RSA key per process for servers without data_dir (generating one costs ~0.1 s)."""
    global _PROCESS_KEY
    if _PROCESS_KEY is None:
        _PROCESS_KEY = c.ServerKey()
    return _PROCESS_KEY
