"""What the test server knows: accounts, auth keys, messages and update state.

Kept in plain records so that it can be written to ``data_dir`` as JSON and read
back on restart; TL objects are built from these records when a request needs them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._chats import Chats
from ._files import FileStore
from ._srp import SrpChallenge

STATE_FILE = "state.json"
STATE_VERSION = 1
FIRST_USER_ID = 7_000_000_001


_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,31}")


def username_problem(username: str, *, bot: bool = False) -> str | None:
    """Which of Telegram's username rules ``username`` breaks, or None if it is valid.

    5-32 characters of A-Z, a-z, 0-9 and _, starting with a letter, not ending with _,
    no two _ in a row; a bot's ends in "bot" (any case).
    """
    if not 5 <= len(username) <= 32:
        return "it must be 5-32 characters long"
    if not _USERNAME.fullmatch(username):
        return "it must start with a letter and hold only letters, digits and _"
    if username.endswith("_"):
        return "it must not end with _"
    if "__" in username:
        return "it must not hold two _ in a row"
    if bot and not username.lower().endswith("bot"):
        return "a bot's username must end in 'bot'"
    return None


def check_username(username: str, *, bot: bool = False) -> None:
    """Raise ValueError naming the rule ``username`` breaks (Telegram's username rules)."""
    problem = username_problem(username, bot=bot)
    if problem is not None:
        raise ValueError(f"invalid username {username!r}: {problem}")


@attrs.define(eq=False)
class Password:
    """A 2FA password as the server keeps it: the SRP salts and verifier, never the text."""

    salt1: bytes
    salt2: bytes
    verifier: bytes = attrs.field(repr=False)
    hint: str | None = None


@attrs.define(eq=False)
class Account:
    """A user or a bot. ``token`` is set for bots only; ``password`` when 2FA is on."""

    id: int
    access_hash: int
    first_name: str
    phone: str | None = None
    username: str | None = None
    bot: bool = False
    token: str | None = None
    pts: int = 1
    next_message_id: int = 1
    # Messages that changed this account's pts, oldest first: the getDifference log.
    box: list[StoredMessage] = attrs.field(factory=list)
    # random_id values of messages this account sent (RANDOM_ID_DUPLICATE on reuse).
    random_ids: set[int] = attrs.field(factory=set)
    password: Password | None = None
    # The DC this account lives on: its auth keys are authorized there, its files kept there.
    dc_id: int = 2


@attrs.define(eq=False)
class StoredMessage:
    """One private or basic-group message as one account sees it; ``pts`` is the box's
    pts after it. ``peer_type`` is "user" or "chat" (a basic group, ``peer_id`` its id);
    ``link`` is shared by the copies of one message in the boxes of its accounts."""

    id: int
    pts: int
    date: int
    peer_id: int
    from_id: int
    out: bool
    text: str
    # The file attached to this message (a key of the server's file store), if any.
    media_id: int | None = None
    peer_type: str = "user"
    edit_date: int | None = None
    link: int | None = None
    # A basic-group service message: "create", "add_user" or "delete_user" of ``action_users``.
    action: str | None = None
    action_users: list[int] = attrs.field(factory=list)


@attrs.define(eq=False)
class AuthKeyRecord:
    """A permanent auth key and what the server remembers about it."""

    key: bytes
    key_id: bytes
    created: float
    salt: int
    # The DC whose listener created the key: a key is known on that DC only.
    dc_id: int = 2
    user_id: int | None = None
    layer: int | None = None
    # The api_id given in initConnection; requests need it once per key.
    api_id: int | None = None
    # The account whose login waits for its 2FA password on this key (signIn answered
    # SESSION_PASSWORD_NEEDED); not persisted, like a login code.
    password_pending: int | None = None


@attrs.define(eq=False)
class LoginCode:
    phone: str
    phone_code_hash: str
    code: str
    sent_at: float


@attrs.define(eq=False)
class World:
    """All durable server state."""

    accounts: dict[int, Account] = attrs.field(factory=dict)
    auth_keys: dict[bytes, AuthKeyRecord] = attrs.field(factory=dict)
    login_codes: dict[str, LoginCode] = attrs.field(factory=dict)
    next_user_id: int = FIRST_USER_ID
    # Open account.getPassword challenges by srp_id; not persisted (a restart makes
    # them stale: SRP_ID_INVALID).
    srp_challenges: dict[int, SrpChallenge] = attrs.field(factory=dict)
    # Channels, supergroups, basic groups and account pts steps besides new messages.
    chats: Chats = attrs.field(factory=Chats)
    # Uploaded and stored files (bytes under data_dir/files/, see `._files`).
    files: FileStore = attrs.field(factory=FileStore)

    def new_account(
        self,
        *,
        first_name: str,
        phone: str | None,
        username: str | None,
        bot: bool,
        dc_id: int = 2,
    ) -> Account:
        if phone is not None:
            phone = normalize_phone(phone)
            if not phone:
                raise ValueError("a phone number needs digits")
        if phone is not None and self.by_phone(phone) is not None:
            raise ValueError(f"an account with phone {phone!r} exists already")
        if username is not None:
            check_username(username, bot=bot)
        if username is not None and self.by_username(username) is not None:
            raise ValueError(f"the username {username!r} is taken")
        account = Account(
            id=self.next_user_id,
            access_hash=secrets.randbits(63),
            first_name=first_name,
            phone=phone,
            username=username,
            bot=bot,
            dc_id=dc_id,
        )
        if bot:
            account.token = f"{account.id}:{secrets.token_urlsafe(26)}"
        self.next_user_id += 1
        self.accounts[account.id] = account
        return account

    def by_phone(self, phone: str) -> Account | None:
        phone = normalize_phone(phone)
        return next((a for a in self.accounts.values() if a.phone == phone), None)

    def by_username(self, username: str) -> Account | None:
        wanted = username.lower().lstrip("@")
        return next(
            (a for a in self.accounts.values() if a.username and a.username.lower() == wanted),
            None,
        )

    def by_token(self, token: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.bot and a.token == token), None)

    def deliver(
        self,
        sender: Account,
        recipient: Account,
        text: str,
        random_id: int | None,
        *,
        media_id: int | None = None,
    ) -> tuple[StoredMessage, StoredMessage | None]:
        """Store a private message in both boxes; return (sender's copy, recipient's copy).

        Both copies point at the same stored file (``media_id``), if any."""
        now = int(time.time())
        if random_id is not None:
            sender.random_ids.add(random_id)
        out = _append(sender, peer_id=recipient.id, from_id=sender.id, out=True, text=text, now=now)
        out.link = secrets.randbits(62)
        out.media_id = media_id
        if recipient is sender:
            return out, None
        incoming = _append(
            recipient, peer_id=sender.id, from_id=sender.id, out=False, text=text, now=now
        )
        incoming.link = out.link
        incoming.media_id = media_id
        return out, incoming

    # Persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "next_user_id": self.next_user_id,
            "accounts": [_account_to_json(a) for a in self.accounts.values()],
            "auth_keys": [
                {
                    "key": r.key.hex(),
                    "created": r.created,
                    "salt": r.salt,
                    "user_id": r.user_id,
                    "layer": r.layer,
                    "api_id": r.api_id,
                    "dc_id": r.dc_id,
                }
                for r in self.auth_keys.values()
            ],
            "chats": self.chats.to_json(),
            "files": self.files.to_json(),
        }

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        data_dir: Path | None = None,
        blobs: Mapping[int, bytes] | None = None,
    ) -> World:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported test server state version {data.get('version')!r}")
        from ._crypto import auth_key_id

        world = cls(next_user_id=int(data["next_user_id"]))
        world.chats = Chats.from_json(data.get("chats", {}))
        for raw in data["accounts"]:
            account = _account_from_json(raw)
            world.accounts[account.id] = account
        for raw in data["auth_keys"]:
            key = bytes.fromhex(raw["key"])
            record = AuthKeyRecord(
                key=key,
                key_id=auth_key_id(key),
                created=float(raw["created"]),
                salt=int(raw["salt"]),
                user_id=raw["user_id"],
                layer=raw["layer"],
                api_id=raw["api_id"],
                dc_id=int(raw.get("dc_id", 2)),
            )
            world.auth_keys[record.key_id] = record
        # Older state files have no "files" key; file bytes are read from data_dir.
        world.files = FileStore.from_json(data.get("files", []), data_dir, blobs)
        return world

    def reloaded(self) -> World:
        """This world as a restart reads it back (only what `save` keeps), made at once
        from memory: nothing can change it between the snapshot and its use."""
        blobs = {f.id: f.data for f in self.files.files.values()}
        return World.from_json(json.loads(json.dumps(self.to_json())), None, blobs)

    def save(self, data_dir: Path) -> None:
        """Write atomically: a crash mid-write leaves the previous state readable."""
        self.saver()(data_dir)

    def saver(self) -> Callable[[Path], None]:
        """The world as it is now, as a function that writes it to a data_dir: call this
        on the event loop, run what it returns in a thread while the world changes."""
        payload = json.dumps(self.to_json()).encode()
        files = list(self.files.files.values())
        blobs = self.files

        def write(data_dir: Path) -> None:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            blobs.save_blobs(data_dir, files)  # before the state that names them
            fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".state-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, data_dir / STATE_FILE)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        return write

    @classmethod
    def load(cls, data_dir: Path) -> World:
        path = data_dir / STATE_FILE
        if not path.exists():
            return cls()
        try:
            return cls.from_json(json.loads(path.read_bytes()), data_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"test server state {path} is unreadable: {exc}") from exc


def normalize_phone(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def _append(
    account: Account, *, peer_id: int, from_id: int, out: bool, text: str, now: int
) -> StoredMessage:
    account.pts += 1
    message = StoredMessage(
        id=account.next_message_id,
        pts=account.pts,
        date=now,
        peer_id=peer_id,
        from_id=from_id,
        out=out,
        text=text,
    )
    account.next_message_id += 1
    account.box.append(message)
    return message


def _account_to_json(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "access_hash": a.access_hash,
        "first_name": a.first_name,
        "phone": a.phone,
        "username": a.username,
        "bot": a.bot,
        "token": a.token,
        "pts": a.pts,
        "next_message_id": a.next_message_id,
        "random_ids": sorted(a.random_ids),
        "dc_id": a.dc_id,
        "box": [attrs.asdict(m) for m in a.box],
        "password": None
        if a.password is None
        else {
            "salt1": a.password.salt1.hex(),
            "salt2": a.password.salt2.hex(),
            "verifier": a.password.verifier.hex(),
            "hint": a.password.hint,
        },
    }


def _account_from_json(raw: dict[str, Any]) -> Account:
    return Account(
        id=int(raw["id"]),
        access_hash=int(raw["access_hash"]),
        first_name=str(raw["first_name"]),
        phone=raw["phone"],
        username=raw["username"],
        bot=bool(raw["bot"]),
        token=raw["token"],
        pts=int(raw["pts"]),
        next_message_id=int(raw["next_message_id"]),
        random_ids={int(r) for r in raw["random_ids"]},
        box=[StoredMessage(**m) for m in raw["box"]],
        password=_password_from_json(raw.get("password")),
        dc_id=int(raw.get("dc_id", 2)),
    )


def _password_from_json(raw: dict[str, Any] | None) -> Password | None:
    # Older state files have no "password" key: those accounts have no 2FA.
    if raw is None:
        return None
    return Password(
        salt1=bytes.fromhex(raw["salt1"]),
        salt2=bytes.fromhex(raw["salt2"]),
        verifier=bytes.fromhex(raw["verifier"]),
        hint=raw["hint"],
    )
