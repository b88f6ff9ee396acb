"""The account part of `MTProtoTestServer`'s control API: accounts, bots, login codes,
2FA, server-side messages, auth keys and injected errors.

A mixin, so that the server's own module stays about links and MTProto; each call
changes the world the way the matching API call would.
"""

from __future__ import annotations

import collections
import os
import struct
import time
from typing import TYPE_CHECKING, Any

import anyio.lowlevel
import attrs

from . import _crypto as c
from . import _srp, _tl
from ._records import TestBot, TestUser
from ._world import Account, AuthKeyRecord, Password, StoredMessage, World

if TYPE_CHECKING:
    from ._dcs import ExportedAuth


@attrs.define(eq=False)
class _Injected:
    error: str
    code: int
    remaining: int


class AccountControl:
    """Mixed into MTProtoTestServer; what tests do to accounts and keys."""

    if TYPE_CHECKING:
        _world: World
        _exports: dict[bytes, ExportedAuth]
        _sessions: Any
        _injected: dict[str, collections.deque[_Injected]]

        def _home_dc(self, dc_id: int | None) -> int: ...

        def _on_world_changed(self) -> None: ...

        def _push_new_message(
            self,
            sender: Account,
            recipient: Account,
            out: StoredMessage,
            incoming: StoredMessage | None,
            *,
            skip_session: int | None,
        ) -> None: ...

    def create_user(
        self, phone: str, first_name: str, username: str | None = None, *, dc_id: int | None = None
    ) -> TestUser:
        """Register an account homed on ``dc_id`` (default: the server's ``dc_id``);
        log in to it with a code from `login_code`.

        ``username`` follows Telegram's rules (5-32 characters of letters, digits and _,
        starting with a letter, no trailing or double _); ValueError names the rule broken.
        """
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
        with ``client.start(bot_token=bot.token)``.

        ``username`` follows Telegram's rules, as for `create_user`, and ends in "bot"
        (any case), e.g. ``echo_bot``; ValueError names the rule broken.
        """
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
