"""The record of links per auth key: how many are open now, and the most ever at once.

A link counts for an auth key once the server has decrypted a message of it with that
key, and for one key at a time: the key of the session the link serves (the same key
`MTProtoTestServer.connections` shows). A link doing the DH exchange counts for no key
yet; a link that moves to another key (a new DH exchange on it) stops counting for the
old one. Telegram revokes a key used over two links at once from different places, so
tests read this record to prove that two processes never used one key together.
"""

from __future__ import annotations

import logging
import time

import attrs

__all__ = ["KeyLinkCount"]

log = logging.getLogger("resilient_tg.testing.server")


@attrs.frozen
class KeyLinkCount:
    """One auth key's links: open now, and the most open at once since the record began
    (the server's start, or `MTProtoTestServer.reset_link_record`)."""

    auth_key_id: int
    open: int
    max_open: int
    # When ``max_open`` was first reached (``time.time()``).
    max_open_at: float


class KeyLinks:
    """Counts the server's open links per auth key id (the key's 64-bit id, never the key)."""

    def __init__(self) -> None:
        # Links keyed by identity: a link counts for at most one key.
        self._key_of: dict[object, int] = {}
        self._counts: dict[int, KeyLinkCount] = {}

    def attribute(self, link: object, auth_key_id: int) -> None:
        """Count ``link`` for ``auth_key_id`` from now on (and no longer for its old key)."""
        old = self._key_of.get(link)
        if old == auth_key_id:
            return
        if old is not None:
            self._add(old, -1)
        self._key_of[link] = auth_key_id
        self._add(auth_key_id, +1)

    def release(self, link: object) -> None:
        """``link`` closed: it counts for no key any more."""
        old = self._key_of.pop(link, None)
        if old is not None:
            self._add(old, -1)

    def open(self, auth_key_id: int) -> int:
        count = self._counts.get(auth_key_id)
        return count.open if count is not None else 0

    def counts(self) -> dict[int, KeyLinkCount]:
        return dict(self._counts)

    def max_per_key(self) -> int:
        return max((count.max_open for count in self._counts.values()), default=0)

    def reset(self) -> None:
        """Start the record again from the links open now."""
        now = time.time()
        self._counts = {
            key_id: KeyLinkCount(
                auth_key_id=key_id, open=count.open, max_open=count.open, max_open_at=now
            )
            for key_id, count in self._counts.items()
            if count.open
        }

    def _add(self, auth_key_id: int, delta: int) -> None:
        count = self._counts.get(auth_key_id)
        if count is None:
            count = KeyLinkCount(auth_key_id=auth_key_id, open=0, max_open=0, max_open_at=0.0)
        opened = count.open + delta
        if opened > count.max_open:
            count = attrs.evolve(count, open=opened, max_open=opened, max_open_at=time.time())
            if opened > 1:
                log.debug("auth key %016x has %d links open at once", auth_key_id, opened)
        else:
            count = attrs.evolve(count, open=opened)
        self._counts[auth_key_id] = count
