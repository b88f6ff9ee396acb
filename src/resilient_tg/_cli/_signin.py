"""Signing in on a connected client: with a bot token, or with a phone, its login
code and the two-step password (the code and the password are asked for at most
`ATTEMPTS` times each).

Secrets (bot token, password) are asked for without echo and never printed.
Telegram's refusals become CliError with the exit code for a failed login.
"""

from __future__ import annotations

from typing import Any

from telethon import errors
from telethon.tl import functions

from ._common import EXIT_AUTH, CliError
from ._prompt import Prompter

ATTEMPTS = 3


async def bot_sign_in(telegram: Any, bot_token: str | None, prompter: Prompter) -> Any:
    """Sign in with ``bot_token``, asked for if not given."""
    token = bot_token or await prompter.secret("Bot token: ")
    if not token.strip():
        raise CliError("no bot token given", EXIT_AUTH)
    try:
        return await telegram.sign_in(bot_token=token.strip())
    except (errors.AccessTokenInvalidError, errors.AccessTokenExpiredError) as exc:
        raise CliError(f"the bot token was refused ({exc.message})", EXIT_AUTH) from None


async def user_sign_in(telegram: Any, phone: str | None, prompter: Prompter) -> Any:
    """Sign in with a login code sent to ``phone`` (asked for if not given), then the
    two-step password if the account has one."""
    phone = phone or await prompter.line("Phone number (international, +15550001): ")
    if not phone:
        raise CliError("no phone number given", EXIT_AUTH)
    sent = await telegram.send_code_request(phone)
    prompter.say(f"A login code was sent to {phone} ({_delivery(sent)}).")
    for attempt in range(1, ATTEMPTS + 1):
        code = await prompter.line("Login code: ")
        if not code:
            _wrong(prompter, "code", attempt)
            continue
        try:
            return await telegram.sign_in(phone, code)
        except (errors.PhoneCodeInvalidError, errors.PhoneCodeEmptyError):
            _wrong(prompter, "code", attempt)
        except errors.SessionPasswordNeededError:
            return await _password_login(telegram, prompter)
        except errors.PhoneCodeExpiredError:
            raise CliError("the login code expired; run login again", EXIT_AUTH) from None
        except errors.PhoneNumberUnoccupiedError:
            raise CliError(
                f"no Telegram account uses {phone}; sign up in an official app first",
                EXIT_AUTH,
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover - _wrong raises on the last try


async def _password_login(telegram: Any, prompter: Prompter) -> Any:
    info = await telegram(functions.account.GetPasswordRequest())
    hint = f" (hint: {info.hint})" if getattr(info, "hint", None) else ""
    prompter.say("This account has two-step verification.")
    for attempt in range(1, ATTEMPTS + 1):
        password = await prompter.secret(f"2FA password{hint}: ")
        if not password:
            _wrong(prompter, "password", attempt)
            continue
        try:
            return await telegram.sign_in(password=password)
        except errors.PasswordHashInvalidError:
            _wrong(prompter, "password", attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _wrong(prompter: Prompter, what: str, attempt: int) -> None:
    left = ATTEMPTS - attempt
    if left <= 0:
        raise CliError(f"wrong {what} {ATTEMPTS} times; login failed", EXIT_AUTH)
    prompter.say(f"Wrong {what}; {left} attempt{'s' if left > 1 else ''} left.")


def _delivery(sent: Any) -> str:
    kind = type(getattr(sent, "type", None)).__name__
    return {
        "SentCodeTypeApp": "in the Telegram app",
        "SentCodeTypeSms": "by SMS",
        "SentCodeTypeCall": "by a phone call",
        "SentCodeTypeFlashCall": "by a flash call",
        "SentCodeTypeEmailCode": "by email",
    }.get(kind, kind)


def who(user: Any) -> str:
    if user is None:
        return "an unknown account"
    name = " ".join(p for p in (user.first_name, getattr(user, "last_name", None)) if p)
    extra = f"@{user.username}, " if getattr(user, "username", None) else ""
    kind = "bot " if getattr(user, "bot", False) else ""
    return f"{kind}{name or 'unnamed'} ({extra}id {user.id})"
