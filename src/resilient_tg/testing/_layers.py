"""The one API layer the test server speaks, and its answer to clients on another.

Requests are parsed and answers written with Telethon's generated TL classes, so the
server speaks exactly Telethon's layer (``telethon.tl.alltlobjects.LAYER``). Serving
other layers would mean a second schema for every constructor that changed; instead
a client that declares another layer is told so, clearly, instead of reading answers
in a schema it did not ask for:

- ``invokeWithLayer(N, ...)`` records N on the auth key (as Telegram does); while a
  key's layer is not the server's, every API request on it (wrapped or not) is
  answered ``rpc_error 400 CONNECTION_LAYER_INVALID (this test server speaks layer
  229 only, not N)``. The message starts with Telegram's error name, so code that
  matches the name still sees it; the rest is for the human reading the error.
- A request that fails to parse because its inner query differs in the client's
  layer still gets that error when it starts with ``invokeWithLayer``.
- Each key's mismatch is logged once at WARNING. Pings are MTProto, not API, and are
  answered in any layer.
"""

from __future__ import annotations

import logging
import struct

from telethon.tl.alltlobjects import LAYER
from telethon.tl.functions import InvokeWithLayerRequest

__all__ = ["LAYER", "LayerCheck"]

log = logging.getLogger("resilient_tg.testing.server")

ERROR_CODE = 400
ERROR_NAME = "CONNECTION_LAYER_INVALID"
# Keys warned about are remembered up to this many (then forgotten oldest first).
MAX_WARNED = 10_000
_INVOKE_WITH_LAYER = struct.pack("<I", InvokeWithLayerRequest.CONSTRUCTOR_ID)


def layer_error(layer: int) -> str:
    """The rpc_error message for a client on ``layer``: Telegram's name, then why."""
    return f"{ERROR_NAME} (this test server speaks layer {LAYER} only, not {layer})"


def declared_layer(body: bytes) -> int | None:
    """The layer of a raw ``invokeWithLayer`` body (even one whose query is unreadable)."""
    if len(body) >= 8 and body[:4] == _INVOKE_WITH_LAYER:
        layer: int = struct.unpack("<i", body[4:8])[0]
        return layer
    return None


class LayerCheck:
    """Warns once per auth key about a layer the server does not speak."""

    def __init__(self) -> None:
        self._warned: dict[bytes, None] = {}

    def refusal(self, key_id: bytes, layer: int | None) -> str | None:
        """The error message for a key on ``layer``, or None when the server speaks it."""
        if layer is None or layer == LAYER:
            return None
        if key_id not in self._warned:
            self._warned[key_id] = None
            while len(self._warned) > MAX_WARNED:
                del self._warned[next(iter(self._warned))]
            log.warning(
                "auth key %016x speaks layer %d; this test server speaks layer %d only, "
                "so its requests get %s",
                struct.unpack("<Q", key_id)[0],
                layer,
                LAYER,
                ERROR_NAME,
            )
        return layer_error(layer)
