"""What the API handler modules share: the handler registry, the calling context,
the rpc_error to raise, and `Api`, which the handlers get as their first argument.

Handlers register with `_method` when their module is imported; `._api` imports them
all. `ServerHooks` is what the handlers may use of the server that owns the API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
from telethon.tl import functions, types
from telethon.tl.types import auth as auth_t
from telethon.tl.types import updates as updates_t

from . import _tl
from ._files import tl_media
from ._links import _Session
from ._world import Account, AuthKeyRecord, StoredMessage, World

# The most messages one getDifference answers before it slices (Telegram uses about 100).
DIFFERENCE_LIMIT = 100


class RpcFailure(Exception):
    """An rpc_error to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


@attrs.define(eq=False)
class CallContext:
    """Who is calling: the auth key, the session and the DC the request came on."""

    record: AuthKeyRecord
    session_id: int
    dc_id: int = 2

    @property
    def user_id(self) -> int | None:
        return self.record.user_id


Handler = Callable[["Api", Any, CallContext], Any]
_HANDLERS: dict[type, Handler] = {}
# Methods that work before login, as on Telegram.
_NO_AUTH: set[type] = set()


def _method(cls: type, *, needs_auth: bool = True) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[cls] = fn
        if not needs_auth:
            _NO_AUTH.add(cls)
        return fn

    return register


def implemented_methods() -> frozenset[type]:
    return frozenset(_HANDLERS)


class ServerHooks(Protocol):
    """What the API handlers use of `MTProtoTestServer`."""

    @property
    def _world(self) -> World: ...

    @property
    def api_id(self) -> int: ...

    @property
    def api_hash(self) -> str: ...

    @property
    def dc_id(self) -> int: ...

    @property
    def dc_ids(self) -> tuple[int, ...]: ...

    @property
    def network_dc(self) -> int | None: ...

    @property
    def difference_limit(self) -> int | None: ...

    @property
    def channel_difference_limit(self) -> int: ...

    @property
    def file_bytes_limit(self) -> int: ...

    def advertised_address(self, dc_id: int) -> tuple[str, int]: ...

    def _on_world_changed(self) -> None: ...

    def _login_code_sent(self, phone: str, code: str) -> None: ...

    def _export_auth(self, user_id: int, dc_id: int) -> bytes: ...

    def _take_export(self, user_id: int, token: bytes, dc_id: int) -> bool: ...

    def _sessions_of(self, user_id: int) -> Iterator[_Session]: ...

    def _send(
        self,
        session: _Session,
        body: bytes,
        *,
        content_related: bool = True,
        response: bool = False,
    ) -> None: ...

    def _push_new_message(
        self,
        sender: Account,
        recipient: Account,
        out: StoredMessage,
        incoming: StoredMessage | None,
        *,
        skip_session: int | None,
    ) -> None: ...


class Api:
    """Answers API requests for one server, pushing updates through the server."""

    def __init__(self, server: ServerHooks) -> None:
        self._server = server

    @property
    def world(self) -> World:
        return self._server._world

    def call(self, request: Any, ctx: CallContext) -> Any:
        handler = _HANDLERS.get(type(request))
        if handler is None:
            raise RpcFailure(400, "METHOD_NOT_IMPLEMENTED")
        if type(request) not in _NO_AUTH:
            check_home_dc(self.me(ctx), request, ctx)
        return handler(self, request, ctx)

    # Helpers ----------------------------------------------------------------------

    def me(self, ctx: CallContext) -> Account:
        if ctx.user_id is None or ctx.user_id not in self.world.accounts:
            if ctx.record.password_pending is not None:
                # Telegram answers this until auth.checkPassword completes the login.
                raise RpcFailure(401, "SESSION_PASSWORD_NEEDED")
            raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
        return self.world.accounts[ctx.user_id]

    def tl_user(self, account: Account, viewer: Account | None) -> types.User:
        is_self = viewer is not None and viewer.id == account.id
        return types.User(
            id=account.id,
            is_self=is_self or None,
            bot=account.bot or None,
            access_hash=account.access_hash,
            first_name=account.first_name,
            username=account.username,
            phone=account.phone if is_self else None,
            status=None if account.bot else types.UserStatusRecently(),
            bot_info_version=1 if account.bot else None,
        )

    def tl_message(self, message: StoredMessage) -> types.Message:
        stored = None if message.media_id is None else self.world.files.files.get(message.media_id)
        return types.Message(
            id=message.id,
            peer_id=types.PeerUser(message.peer_id),
            date=_date(message.date),
            message=message.text,
            out=message.out or None,
            from_id=types.PeerUser(message.from_id),
            media=None if stored is None else tl_media(stored),
        )

    def resolve_peer(self, peer: Any, me: Account) -> Account:
        if isinstance(peer, (types.InputPeerSelf, types.InputUserSelf)):
            return me
        if isinstance(peer, (types.InputPeerUser, types.InputUser)):
            account = self.world.accounts.get(peer.user_id)
            if account is None or account.access_hash != peer.access_hash:
                raise RpcFailure(400, "PEER_ID_INVALID")
            return account
        raise RpcFailure(400, "PEER_ID_INVALID")

    def state(self, me: Account) -> updates_t.State:
        return updates_t.State(pts=me.pts, qts=0, date=_now(), seq=0, unread_count=0)

    def new_message_updates(
        self, message: StoredMessage, owner: Account, other: Account
    ) -> types.Updates:
        return types.Updates(
            updates=[
                types.UpdateNewMessage(
                    message=self.tl_message(message), pts=message.pts, pts_count=1
                )
            ],
            users=[self.tl_user(other, owner), self.tl_user(owner, owner)],
            chats=[],
            date=_date(message.date),
            seq=0,
        )

    def check_app(self, api_id: int, api_hash: str | None) -> None:
        if api_id != self._server.api_id or (
            api_hash is not None and api_hash != self._server.api_hash
        ):
            raise RpcFailure(400, "API_ID_INVALID")


def _now() -> dt.datetime:
    return dt.datetime.now(tz=dt.timezone.utc)


def _date(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)


# Served on any DC the key is authorized on: login and config calls, file transfer
# (what Telethon's exported senders are for), statistics and language packs.
ANY_DC_NAMESPACES = frozenset({"auth", "help", "upload", "stats", "langpack"})
# users.getUsers is what get_me() sends on every connection.
ANY_DC_METHODS: frozenset[type] = frozenset({functions.users.GetUsersRequest})


def check_home_dc(me: Account, request: Any, ctx: CallContext) -> None:
    """USER_MIGRATE_X for an account method called off the account's home DC."""
    if me.dc_id == ctx.dc_id or type(request) in ANY_DC_METHODS:
        return
    if _tl.tl_name(request).split(".", 1)[0] in ANY_DC_NAMESPACES:
        return
    raise RpcFailure(303, f"USER_MIGRATE_{me.dc_id}")


def _authorize(api: Api, ctx: CallContext, account: Account) -> auth_t.Authorization:
    ctx.record.user_id = account.id
    ctx.record.password_pending = None
    api._server._on_world_changed()
    return auth_t.Authorization(user=api.tl_user(account, account))
