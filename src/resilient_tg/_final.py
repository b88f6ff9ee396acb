"""Whether the client can still carry a request: the check the request gate (`._requests`)
and the exported senders (`._exported`) make before and after each try."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import AuthLostError, NotConnectedError, ResultUnknownError
from ._kinds import request_name
from ._state import ConnectionState

if TYPE_CHECKING:
    from ._core import ClientCore

__all__ = ["raise_if_final"]


def raise_if_final(client: ClientCore, request: Any = None, sent: bool = False) -> None:
    """Raise if the client can carry no request any more; ``sent``: this one had
    been given a msg_id, so it may have taken effect."""
    state = client._state
    if state is ConnectionState.AUTH_LOST:
        raise AuthLostError(
            f"the session's auth key is no longer accepted ({client._detail})",
            reason=client._detail,
        )
    if state is ConnectionState.REJECTED:
        raise client._rejected_error()
    if state in (ConnectionState.GAVE_UP, ConnectionState.CLOSED) or client._closing:
        if sent:
            raise ResultUnknownError(
                f"{request_name(request)} was sent, but the client is {state.value} "
                "and its answer can no longer come; it may or may not have taken effect",
                request=request,
            )
        raise NotConnectedError(f"the client is {state.value}; no request can be sent")
