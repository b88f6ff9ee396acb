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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from telethon.sessions import MemorySession

from . import _crypto as c
from . import _tl
from ._account_control import AccountControl, _Injected
from ._api import Api
from ._chat_control import ChatControl
from ._dcs import DcControl, ExportedAuth, dc_range
from ._files_control import FileControl
from ._handshake import Handshakes
from ._key_links import KeyLinkCount, KeyLinks
from ._layers import LayerCheck
from ._links import DcListener, _Link, _Out, _Session
from ._mtproto import MessageHandling, _key_id_int
from ._records import ConnectionInfo, RequestRecord, TestBot, TestUser
from ._trust import trusted_key
from ._world import Account, StoredMessage, World

__all__ = ["ConnectionInfo", "MTProtoTestServer", "RequestRecord", "TestBot", "TestUser"]

log = logging.getLogger("resilient_tg.testing.server")

KEY_FILE = "server_key.pem"
MAX_RECORDED_REQUESTS = 100_000


class MTProtoTestServer(MessageHandling, AccountControl, DcControl, ChatControl, FileControl):
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
    Channels, supergroups and basic groups: see `create_channel`, `create_group`,
    `post`, `edit_message`, `delete_messages`, `add_members`, `channel_pts` and
    ``channel_difference_limit``.
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
        self._layer_check = LayerCheck()
        # While a client message is handled: its session and the link it came on, where
        # direct answers go (see _send).
        self._arrival: tuple[_Session, _Link] | None = None
        self._sessions: collections.OrderedDict[tuple[bytes, int], _Session] = (
            collections.OrderedDict()
        )
        self._links: set[_Link] = set()
        self._links_total = 0
        self._key_links = KeyLinks()
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
            if self._data_dir is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._world.saver(), self._data_dir)

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
        self._sessions.clear()
        # Read back what a save keeps, in one step on the event loop: a control call made
        # during the restart (send_message from another task) lands either before it,
        # and is kept, or after it, in the new world; none is lost in between. The
        # state is written to data_dir afterwards, from a snapshot.
        if self._data_dir is None:
            self._world = World()
        else:
            self._world = self._world.reloaded()
            await anyio.to_thread.run_sync(self._world.saver(), self._data_dir)
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

    def open_links(self, auth_key_id: int) -> int:
        """How many links count for the auth key now (its 64-bit id, as in `connections`).

        A link counts for a key once the server has decrypted a message of it with that
        key, and for one key at a time; a link still doing the DH exchange counts for none.
        """
        return self._key_links.open(auth_key_id)

    def link_counts(self) -> dict[int, KeyLinkCount]:
        """Every auth key that had a link since the record began, by key id: its links
        open now and the most it had open at once (with when). The record begins when the
        server object is created or at `reset_link_record`, and outlives `restart`, which
        closes every link."""
        return self._key_links.counts()

    def max_links_per_key(self) -> int:
        """The most links any one auth key had open at once since the record began (0 if
        none had a link): above 1 means some key was used over two links together."""
        return self._key_links.max_per_key()

    def reset_link_record(self) -> None:
        """Start the record of links per key again from the links open now."""
        self._key_links.reset()

    def send_transport_error(self, code: int = -429, *, auth_key_id: int | None = None) -> int:
        """Send the transport error ``code`` on every open link (or on the links of one
        auth key, by its 64-bit id as in `connections`), then close them; return how
        many. Telegram sends -429 ("transport flood") to a client that opens too many
        links or sends too fast. On the full transport it comes unframed (the code as
        length, seq and body), and Telethon then gives the link up instead of
        reconnecting by itself; on the others it is a 4-byte packet."""
        if not -999 <= code <= -1:
            raise ValueError(f"code must be a negative transport error code, got {code}")
        body = struct.pack("<i", code)
        sent = 0
        for link in list(self._links):
            if link.framing is None:
                continue  # the transport is not known yet: nothing can be framed on it
            if auth_key_id is not None and (
                link.session is None or _key_id_int(link.session.record.key_id) != auth_key_id
            ):
                continue
            link.push(_Out(kind="transport_error", body=body))
            link.push(_Out(kind="close"))
            sent += 1
        return sent

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
