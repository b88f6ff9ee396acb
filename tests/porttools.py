"""A port that refuses connects for as long as a test needs it to."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port nothing listens on, kept bound (not listening) for the block.

    Closing the socket at once would free the port, and the other xdist worker's
    bind(0) could take it and answer: the test would meet a stranger instead of a
    refusal. A bound socket that does not listen is refused like a free port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])
