"""Error text about a store that names the store once.

Store errors begin with the store's description (``"<where>: could not save ..."``), so
that they stand alone; a caller that writes its own ``"<where>: ..."`` line strips it.
"""

from __future__ import annotations

__all__ = ["store_error_text", "without_store"]


def without_store(where: str, text: str) -> str:
    """``text`` without a leading ``"<where>: "`` (the caller names the store itself)."""
    prefix = f"{where}: "
    return text[len(prefix) :] if where and text.startswith(prefix) else text


def store_error_text(where: str, error: BaseException) -> str:
    """``"<Type>: <message>"`` for an error of the store ``where``, without naming it."""
    text = without_store(where, str(error).strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
