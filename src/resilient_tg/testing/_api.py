"""The Telegram API methods the test server implements, on top of `._world`.

Each handler takes the request and the calling context and returns a response value
(a TL object, a list for a Vector, a bool) or raises `RpcFailure`, answered as
rpc_error. Behaviour follows Telegram where it is known.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from telethon.tl import functions, types
from telethon.tl.types import account as account_t
from telethon.tl.types import auth as auth_t
from telethon.tl.types import contacts as contacts_t
from telethon.tl.types import messages as messages_t
from telethon.tl.types import updates as updates_t
from telethon.tl.types import users as users_t

from . import _srp
from ._crypto import DH_G
from ._files import tl_media
from ._world import Account, AuthKeyRecord, LoginCode, StoredMessage, World, normalize_phone

if TYPE_CHECKING:
    from ._server import MTProtoTestServer

# The most messages one getDifference answers before it slices (Telegram uses about 100).
DIFFERENCE_LIMIT = 100
LOGIN_CODE_TTL = 300.0
# Open SRP challenges kept per server; the oldest go first beyond this.
MAX_SRP_CHALLENGES = 10_000


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


class Api:
    """Answers API requests for one server, pushing updates through the server."""

    def __init__(self, server: MTProtoTestServer) -> None:
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


# auth ---------------------------------------------------------------------------------


@_method(functions.auth.SendCodeRequest, needs_auth=False)
def _send_code(api: Api, request: Any, ctx: CallContext) -> auth_t.SentCode:
    api.check_app(request.api_id, request.api_hash)
    phone = normalize_phone(request.phone_number)
    if not 5 <= len(phone) <= 15:
        raise RpcFailure(400, "PHONE_NUMBER_INVALID")
    check_phone_dc(api, phone, ctx, network=True)
    code = LoginCode(
        phone=phone,
        phone_code_hash=secrets.token_hex(9),
        code=f"{secrets.randbelow(100000):05d}",
        sent_at=time.monotonic(),
    )
    api.world.login_codes[phone] = code
    api._server._login_code_sent(phone, code.code)
    return auth_t.SentCode(
        type=auth_t.SentCodeTypeApp(length=5), phone_code_hash=code.phone_code_hash
    )


def _check_code(
    api: Api, phone_number: str, phone_code_hash: str, phone_code: str | None, *, need_code: bool
) -> str:
    phone = normalize_phone(phone_number)
    code = api.world.login_codes.get(phone)
    if code is None or code.phone_code_hash != phone_code_hash:
        raise RpcFailure(
            400, "PHONE_CODE_HASH_EMPTY" if not phone_code_hash else "PHONE_CODE_EXPIRED"
        )
    if time.monotonic() - code.sent_at > LOGIN_CODE_TTL:
        raise RpcFailure(400, "PHONE_CODE_EXPIRED")
    if not need_code:
        return phone
    if not phone_code:
        raise RpcFailure(400, "PHONE_CODE_EMPTY")
    if phone_code != code.code:
        raise RpcFailure(400, "PHONE_CODE_INVALID")
    return phone


def _authorize(api: Api, ctx: CallContext, account: Account) -> auth_t.Authorization:
    ctx.record.user_id = account.id
    ctx.record.password_pending = None
    api._server._on_world_changed()
    return auth_t.Authorization(user=api.tl_user(account, account))


@_method(functions.auth.SignInRequest, needs_auth=False)
def _sign_in(api: Api, request: Any, ctx: CallContext) -> Any:
    check_phone_dc(api, request.phone_number, ctx, network=False)
    phone = _check_code(
        api, request.phone_number, request.phone_code_hash, request.phone_code, need_code=True
    )
    account = api.world.by_phone(phone)
    if account is None:
        return auth_t.AuthorizationSignUpRequired()
    api.world.login_codes.pop(phone, None)
    if account.password is not None:
        # The code was right; the login completes with auth.checkPassword on this key.
        ctx.record.user_id = None
        ctx.record.password_pending = account.id
        raise RpcFailure(401, "SESSION_PASSWORD_NEEDED")
    return _authorize(api, ctx, account)


@_method(functions.auth.SignUpRequest, needs_auth=False)
def _sign_up(api: Api, request: Any, ctx: CallContext) -> auth_t.Authorization:
    phone = _check_code(api, request.phone_number, request.phone_code_hash, None, need_code=False)
    if api.world.by_phone(phone) is not None:
        raise RpcFailure(400, "PHONE_NUMBER_OCCUPIED")
    if not request.first_name.strip():
        raise RpcFailure(400, "FIRSTNAME_INVALID")
    account = api.world.new_account(
        first_name=request.first_name, phone=phone, username=None, bot=False, dc_id=ctx.dc_id
    )
    api.world.login_codes.pop(phone, None)
    return _authorize(api, ctx, account)


@_method(functions.auth.ImportBotAuthorizationRequest, needs_auth=False)
def _import_bot(api: Api, request: Any, ctx: CallContext) -> auth_t.Authorization:
    api.check_app(request.api_id, request.api_hash)
    account = api.world.by_token(request.bot_auth_token)
    if account is None:
        raise RpcFailure(400, "ACCESS_TOKEN_INVALID")
    if account.dc_id != ctx.dc_id:
        raise RpcFailure(303, f"USER_MIGRATE_{account.dc_id}")
    return _authorize(api, ctx, account)


def _password_account(api: Api, ctx: CallContext) -> Account:
    """Whose password a key may ask about: its logged-in account, or the one whose
    login waits for the password on this key."""
    user_id = ctx.user_id if ctx.user_id is not None else ctx.record.password_pending
    account = api.world.accounts.get(user_id) if user_id is not None else None
    if account is None:
        raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
    return account


def _new_algo() -> types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow:
    """What a client should use to set a new password (Telegram's salt1 is a prefix)."""
    salt1, salt2 = _srp.new_salts()
    return types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
        salt1=salt1[: _srp.NEW_SALT1_SIZE], salt2=salt2, g=DH_G, p=_srp.prime_bytes()
    )


@_method(functions.account.GetPasswordRequest, needs_auth=False)
def _get_password(api: Api, request: Any, ctx: CallContext) -> account_t.Password:
    account = _password_account(api, ctx)
    common: dict[str, Any] = {
        "new_algo": _new_algo(),
        "new_secure_algo": types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000(
            salt=secrets.token_bytes(8)
        ),
        "secure_random": secrets.token_bytes(256),
    }
    password = account.password
    if password is None:
        return account_t.Password(has_password=False, **common)
    challenge = _srp.new_challenge(account.id, ctx.record.key_id, password.verifier)
    challenges = api.world.srp_challenges
    # One open challenge per account and key: asking again makes the last one stale.
    for srp_id, old in list(challenges.items()):
        if old.account_id == account.id and old.auth_key_id == ctx.record.key_id:
            del challenges[srp_id]
    while len(challenges) >= MAX_SRP_CHALLENGES:
        del challenges[next(iter(challenges))]
    challenges[challenge.srp_id] = challenge
    return account_t.Password(
        has_password=True,
        current_algo=types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=password.salt1, salt2=password.salt2, g=DH_G, p=_srp.prime_bytes()
        ),
        srp_B=challenge.srp_B,
        srp_id=challenge.srp_id,
        hint=password.hint,
        **common,
    )


@_method(functions.auth.CheckPasswordRequest, needs_auth=False)
def _check_password(api: Api, request: Any, ctx: CallContext) -> auth_t.Authorization:
    account = _password_account(api, ctx)
    password = account.password
    if password is None:
        raise RpcFailure(400, "PASSWORD_EMPTY")
    check = request.password
    if not isinstance(check, types.InputCheckPasswordSRP):
        raise RpcFailure(400, "PASSWORD_HASH_INVALID")
    challenge = api.world.srp_challenges.get(check.srp_id)
    if (
        challenge is None
        or challenge.account_id != account.id
        or challenge.auth_key_id != ctx.record.key_id
        or challenge.v != password.verifier
    ):
        raise RpcFailure(400, "SRP_ID_INVALID")
    if not _srp.check_m1(challenge, password.salt1, password.salt2, check.A, check.M1):
        raise RpcFailure(400, "PASSWORD_HASH_INVALID")
    del api.world.srp_challenges[check.srp_id]
    return _authorize(api, ctx, account)


@_method(functions.auth.LogOutRequest)
def _log_out(api: Api, request: Any, ctx: CallContext) -> auth_t.LoggedOut:
    ctx.record.user_id = None
    api._server._on_world_changed()
    return auth_t.LoggedOut()


# users --------------------------------------------------------------------------------


@_method(functions.users.GetUsersRequest)
def _get_users(api: Api, request: Any, ctx: CallContext) -> list[types.User]:
    me = api.me(ctx)
    found: list[types.User] = []
    for input_user in request.id:
        try:
            found.append(api.tl_user(api.resolve_peer(input_user, me), me))
        except RpcFailure:
            continue  # Telegram leaves out what it cannot resolve
    return found


@_method(functions.users.GetFullUserRequest)
def _get_full_user(api: Api, request: Any, ctx: CallContext) -> users_t.UserFull:
    me = api.me(ctx)
    try:
        account = api.resolve_peer(request.id, me)
    except RpcFailure:
        raise RpcFailure(400, "USER_ID_INVALID") from None
    return users_t.UserFull(
        full_user=types.UserFull(
            id=account.id,
            settings=types.PeerSettings(),
            notify_settings=types.PeerNotifySettings(),
            common_chats_count=0,
        ),
        chats=[],
        users=[api.tl_user(account, me)],
    )


# contacts, account --------------------------------------------------------------------


@_method(functions.contacts.ResolveUsernameRequest)
def _resolve_username(api: Api, request: Any, ctx: CallContext) -> contacts_t.ResolvedPeer:
    me = api.me(ctx)
    if not request.username or len(request.username) > 32:
        raise RpcFailure(400, "USERNAME_INVALID")
    account = api.world.by_username(request.username)
    if account is None:
        raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
    return contacts_t.ResolvedPeer(
        peer=types.PeerUser(account.id), chats=[], users=[api.tl_user(account, me)]
    )


@_method(functions.account.UpdateStatusRequest)
def _update_status(api: Api, request: Any, ctx: CallContext) -> bool:
    api.me(ctx)
    return True


# updates ------------------------------------------------------------------------------


@_method(functions.updates.GetStateRequest)
def _get_state(api: Api, request: Any, ctx: CallContext) -> updates_t.State:
    return api.state(api.me(ctx))


@_method(functions.updates.GetDifferenceRequest)
def _get_difference(api: Api, request: Any, ctx: CallContext) -> Any:
    me = api.me(ctx)
    if request.pts > me.pts:
        # A client ahead of the server (e.g. after a restart that lost state).
        return updates_t.DifferenceTooLong(pts=me.pts)
    missed = [m for m in me.box if m.pts > request.pts]
    if not missed:
        return updates_t.DifferenceEmpty(date=_now(), seq=0)
    limit = DIFFERENCE_LIMIT
    if request.pts_total_limit:
        limit = min(limit, request.pts_total_limit)
    batch = missed[:limit]
    peers = {m.peer_id for m in batch} | {m.from_id for m in batch}
    users = [
        api.tl_user(api.world.accounts[p], me) for p in sorted(peers) if p in api.world.accounts
    ]
    new_messages = [api.tl_message(m) for m in batch]
    if len(batch) < len(missed):
        last = batch[-1]
        return updates_t.DifferenceSlice(
            new_messages=new_messages,
            new_encrypted_messages=[],
            other_updates=[],
            chats=[],
            users=users,
            intermediate_state=updates_t.State(
                pts=last.pts, qts=0, date=_date(last.date), seq=0, unread_count=0
            ),
        )
    return updates_t.Difference(
        new_messages=new_messages,
        new_encrypted_messages=[],
        other_updates=[],
        chats=[],
        users=users,
        state=api.state(me),
    )


# messages -----------------------------------------------------------------------------


@_method(functions.messages.SendMessageRequest)
def _send_message(api: Api, request: Any, ctx: CallContext) -> types.UpdateShortSentMessage:
    me = api.me(ctx)
    peer = api.resolve_peer(request.peer, me)
    if not request.message or not request.message.strip():
        raise RpcFailure(400, "MESSAGE_EMPTY")
    if len(request.message) > 4096:
        raise RpcFailure(400, "MESSAGE_TOO_LONG")
    if request.random_id in me.random_ids:
        raise RpcFailure(500, "RANDOM_ID_DUPLICATE")
    if me.bot and peer.bot:
        raise RpcFailure(400, "USER_IS_BOT")
    out, incoming = api.world.deliver(me, peer, request.message, request.random_id)
    api._server._on_world_changed()
    api._server._push_new_message(me, peer, out, incoming, skip_session=ctx.session_id)
    return types.UpdateShortSentMessage(
        id=out.id, pts=out.pts, pts_count=1, date=_date(out.date), out=True
    )


def _history(box: list[StoredMessage], peer_id: int, request: Any) -> list[StoredMessage]:
    chat = [m for m in reversed(box) if m.peer_id == peer_id]  # newest first
    if request.offset_id:
        chat = [m for m in chat if m.id < request.offset_id]
    if request.max_id:
        chat = [m for m in chat if m.id < request.max_id]
    if request.min_id:
        chat = [m for m in chat if m.id > request.min_id]
    start = max(0, request.add_offset)
    limit = max(0, min(request.limit or 100, 100))
    return chat[start : start + limit]


@_method(functions.messages.GetHistoryRequest)
def _get_history(api: Api, request: Any, ctx: CallContext) -> messages_t.Messages:
    me = api.me(ctx)
    peer = api.resolve_peer(request.peer, me)
    found = _history(me.box, peer.id, request)
    return messages_t.Messages(
        messages=[api.tl_message(m) for m in found],
        topics=[],
        chats=[],
        users=[api.tl_user(peer, me), api.tl_user(me, me)],
    )


@_method(functions.messages.GetDialogsRequest)
def _get_dialogs(api: Api, request: Any, ctx: CallContext) -> messages_t.Dialogs:
    me = api.me(ctx)
    last_by_peer: dict[int, StoredMessage] = {}
    for message in me.box:
        last_by_peer[message.peer_id] = message
    tops = sorted(last_by_peer.values(), key=lambda m: m.id, reverse=True)
    tops = tops[: max(0, min(request.limit or 100, 100))]
    dialogs = [
        types.Dialog(
            peer=types.PeerUser(m.peer_id),
            top_message=m.id,
            read_inbox_max_id=0,
            read_outbox_max_id=0,
            unread_count=0,
            unread_mentions_count=0,
            unread_reactions_count=0,
            unread_poll_votes_count=0,
            notify_settings=types.PeerNotifySettings(),
        )
        for m in tops
    ]
    users = [api.tl_user(api.world.accounts[m.peer_id], me) for m in tops]
    return messages_t.Dialogs(
        dialogs=dialogs, messages=[api.tl_message(m) for m in tops], chats=[], users=users
    )


# Handlers in other modules register themselves on import; they need the names above.
from . import _api_files  # noqa: E402, F401
from ._api_dcs import check_home_dc, check_phone_dc  # noqa: E402
