"""The Telegram API methods the test server implements, on top of `._world`.

This module holds the login, user and contact methods and loads the other handler
modules (`._api_chats`, `._api_dcs`, `._api_files`, `._api_messages`, `._api_reads`);
what they share is in `._api_base`.

Each handler takes the request and the calling context and returns a response value
(a TL object, a list for a Vector, a bool) or raises `RpcFailure`, answered as
rpc_error. Behaviour follows Telegram where it is known.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import account as account_t
from telethon.tl.types import auth as auth_t
from telethon.tl.types import contacts as contacts_t
from telethon.tl.types import updates as updates_t
from telethon.tl.types import users as users_t

from . import _api_chats, _api_dcs, _api_files, _api_messages, _api_reads, _srp
from ._api_base import (
    DIFFERENCE_LIMIT,
    Api,
    CallContext,
    RpcFailure,
    ServerHooks,
    _authorize,
    _method,
    implemented_methods,
)
from ._api_chats import resolve_channel_username
from ._api_dcs import check_phone_dc
from ._crypto import DH_G
from ._world import Account, LoginCode, normalize_phone, username_problem

__all__ = [
    "DIFFERENCE_LIMIT",
    "Api",
    "CallContext",
    "RpcFailure",
    "ServerHooks",
    "implemented_methods",
]

# Importing a handler module registers its methods; this module is what loads them all.
_HANDLER_MODULES = (_api_chats, _api_dcs, _api_files, _api_messages, _api_reads)

LOGIN_CODE_TTL = 300.0
# Open SRP challenges kept per server; the oldest go first beyond this.
MAX_SRP_CHALLENGES = 10_000


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
    if username_problem(request.username.lstrip("@")) is not None:
        raise RpcFailure(400, "USERNAME_INVALID")
    account = api.world.by_username(request.username)
    if account is None:
        return resolve_channel_username(api, request.username, me)
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
