"""Server errors that say the app itself is refused: retrying cannot fix them.

API_ID_INVALID and its kin answer ``initConnection`` (or any request) when the
api_id/api_hash or the connection parameters are not accepted. The auth key is fine;
the configuration is not. The client ends in REJECTED on them, never in AUTH_LOST
(which tells operators to log in again) and never in a retry loop.
"""

from __future__ import annotations

from telethon import errors

__all__ = ["APP_REJECTED", "app_rejected", "rpc_name"]

# The whole family in Telethon 1.x's error list: the app's credentials, or the
# connection parameters the app sends in initConnection, are refused.
_NAMES = {
    "API_ID_INVALID": errors.ApiIdInvalidError,
    "API_ID_PUBLISHED_FLOOD": errors.ApiIdPublishedFloodError,
    "CONNECTION_API_ID_INVALID": errors.ConnectionApiIdInvalidError,
    "CONNECTION_APP_VERSION_EMPTY": errors.ConnectionAppVersionEmptyError,
    "CONNECTION_DEVICE_MODEL_EMPTY": errors.ConnectionDeviceModelEmptyError,
    "CONNECTION_LANG_PACK_INVALID": errors.ConnectionLangPackInvalidError,
    "CONNECTION_LAYER_INVALID": errors.ConnectionLayerInvalidError,
    "CONNECTION_SYSTEM_EMPTY": errors.ConnectionSystemEmptyError,
    "CONNECTION_SYSTEM_LANG_CODE_EMPTY": errors.ConnectionSystemLangCodeEmptyError,
    "INPUT_LAYER_INVALID": errors.InputLayerInvalidError,
}
APP_REJECTED: tuple[type[errors.RPCError], ...] = tuple(_NAMES.values())
# Telethon's error classes by name (its public table), looked up the other way.
_CLASS_NAMES: dict[type, str] = {cls: name for name, cls in errors.rpc_errors_dict.items()}


def rpc_name(error: BaseException) -> str | None:
    """The server's error name (``"CONNECTION_NOT_INITED"``) of a Telethon RPCError.

    Telethon's specific error classes carry their category ("BAD_REQUEST") as
    ``message``, so the name comes from the class where Telethon knows it."""
    if not isinstance(error, errors.RPCError):
        return None
    name = _CLASS_NAMES.get(type(error))
    if name is not None:
        return name
    if type(error).__module__ != errors.RPCError.__module__:
        return None  # a pattern class (FLOOD_WAIT_X...): its message is only its category
    message = str(getattr(error, "message", "") or "")  # a generic class: the server's text
    return message or None


def app_rejected(error: BaseException | None) -> str | None:
    """The server's error name (e.g. ``"API_ID_INVALID"``) if ``error`` refuses the app."""
    if error is None:
        return None
    name = rpc_name(error)
    if isinstance(error, APP_REJECTED) or name in _NAMES:
        return name
    return None
