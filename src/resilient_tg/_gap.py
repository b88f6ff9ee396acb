"""Gap: what the client recovered after the server said a gap was too long to replay."""

from __future__ import annotations

import enum
import time

import attrs

__all__ = ["Gap", "GapReason"]


class GapReason(str, enum.Enum):
    """Which answer of the server reported the gap (a fixed set, for metrics and alerting)."""

    #: updates.getChannelDifference answered channelDifferenceTooLong: the channel's
    #: missed updates are not replayed.
    CHANNEL_DIFFERENCE_TOO_LONG = "channel_difference_too_long"
    #: updates.getDifference answered differenceTooLong: the account's missed updates
    #: (private chats and basic groups) are not replayed.
    DIFFERENCE_TOO_LONG = "difference_too_long"


@attrs.frozen
class Gap:
    """A gap in a chat's updates that Telegram would not replay, and what was recovered.

    When the server answers a difference request with "too long" (channelDifferenceTooLong
    after an outage with more posts than it replays, or differenceTooLong), Telethon
    jumps to the server's state and delivers nothing. ResilientClient instead fetches
    the messages posted in the gap (messages.getHistory; by id with messages.getMessages
    for private chats and basic groups), hands each to the event
    handlers once (as NewMessage events, oldest first, before anything newer), and
    calls the ``on_gap`` callbacks with this event (they may run before the handlers
    have seen every recovered message).

    Only new messages can be recovered this way: **edits and deletions that happened
    inside the gap are not delivered** (the history shows a message's latest text, and a
    deleted one is simply absent). A client that needs them must refetch what it keeps.

    - ``chat_id``: the chat, as a Telethon marked peer id (``-100…`` for a channel).
      An account gap (private chats and basic groups) is reported once per chat that
      got messages back, or once with ``chat_id`` 0 when none did.
    - ``first_id``/``last_id``: the ids of the first and last recovered message
      (inclusive); None when nothing was recovered (``count`` 0): nothing new was
      posted, or the client had no message of the chat yet to start from (the gap is
      the first thing it sees of the chat since it started, e.g. after a restart), or
      the server refused getHistory (bots cannot call it). The log says which.
    - ``count``: how many messages were handed to the handlers.
    - ``reason``: which answer reported the gap; ``at``: when (``time.time()``).
    """

    chat_id: int
    first_id: int | None
    last_id: int | None
    count: int
    reason: GapReason
    at: float = attrs.field(factory=time.time)
