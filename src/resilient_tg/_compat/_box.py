"""The gap-aware message box: which difference request Telethon's update loop makes, and
the newest message id applied per channel."""

from __future__ import annotations

import functools
from typing import Any

from ._check import TelethonCompatError

# The message box ------------------------------------------------------------------------
# Telethon answers channelDifferenceTooLong by jumping to the server's pts and delivering
# nothing (_updates/messagebox.py, apply_channel_difference). To recover such a gap, the
# client needs two things the box does not offer: which getChannelDifference request the
# update loop is making (so that only its answer is handled), and the newest message id
# of each channel already handed to the handlers (where the gap starts). A subclass of
# MessageBox, put in place of the client's before it first connects, records both.


@functools.cache
def _gap_box_class() -> Any:
    from telethon._updates.messagebox import MessageBox  # imported when checked
    from telethon.tl import types

    class GapAwareMessageBox(MessageBox):  # type: ignore[misc]  # Telethon is untyped
        """Telethon's MessageBox, noting each channel's newest applied message id and the
        channel-difference request being made."""

        __slots__ = (
            "rtg_account_request",
            "rtg_ended",
            "rtg_last_account",
            "rtg_last_ids",
            "rtg_request",
        )

        def __init__(self, log: Any) -> None:
            super().__init__(log)
            self.rtg_last_ids: dict[int, int] = {}
            self.rtg_last_account: int | None = None  # private chats and basic groups
            self.rtg_request: Any = None
            self.rtg_account_request: Any = None
            self.rtg_ended = 0  # account differences answered or given up

        def get_difference(self) -> Any:
            request = super().get_difference()
            self.rtg_account_request = request
            return request

        def apply_difference(self, diff: Any, chat_hashes: Any) -> Any:
            result = super().apply_difference(diff, chat_hashes)
            self.rtg_ended += 1
            for update in result[0]:
                self._rtg_note(update)
            return result

        def end_difference(self) -> None:
            super().end_difference()
            self.rtg_ended += 1

        def get_channel_difference(self, chat_hashes: Any) -> Any:
            request = super().get_channel_difference(chat_hashes)
            self.rtg_request = request
            return request

        def apply_pts_info(self, update: Any, *, reset_deadlines: Any) -> Any:
            applied = super().apply_pts_info(update, reset_deadlines=reset_deadlines)
            if applied is not None:
                self._rtg_note(applied)
            return applied

        def apply_channel_difference(self, request: Any, diff: Any, chat_hashes: Any) -> Any:
            result = super().apply_channel_difference(request, diff, chat_hashes)
            for update in result[0]:
                self._rtg_note(update)
            return result

        def _rtg_note(self, update: Any) -> None:
            if isinstance(update, _SHORT_MESSAGES):
                self._rtg_note_account(update.id)
            elif isinstance(update, types.UpdateNewMessage):
                self._rtg_note_account(getattr(update.message, "id", None))
            elif isinstance(update, types.UpdateNewChannelMessage):
                message = update.message
                channel = getattr(getattr(message, "peer_id", None), "channel_id", None)
                ident = getattr(message, "id", None)
                if isinstance(channel, int) and isinstance(ident, int):
                    self.rtg_last_ids[channel] = max(ident, self.rtg_last_ids.get(channel, 0))

        def _rtg_note_account(self, ident: Any) -> None:
            if isinstance(ident, int) and ident > (self.rtg_last_account or 0):
                self.rtg_last_account = ident

    _SHORT_MESSAGES = (
        types.UpdateShortMessage,
        types.UpdateShortChatMessage,
        types.UpdateShortSentMessage,
    )

    return GapAwareMessageBox


def install_gap_box(client: Any) -> None:
    """Put a GapAwareMessageBox in place of the client's (before its first connect)."""
    old = client._message_box
    if not old.is_empty():
        raise TelethonCompatError("the message box must be replaced before the client connects")
    client._message_box = _gap_box_class()(old._log)


def is_box_channel_request(client: Any, request: Any) -> bool:
    """True if ``request`` is the getChannelDifference the update loop is making."""
    return getattr(client._message_box, "rtg_request", None) is request


def is_box_account_request(client: Any, request: Any) -> bool:
    """True if ``request`` is the account getDifference the update loop is making."""
    return getattr(client._message_box, "rtg_account_request", None) is request


def last_account_message(client: Any) -> int | None:
    """The newest message id of the account's private chats and basic groups applied
    since the client was built (those ids are one sequence per account)."""
    return getattr(client._message_box, "rtg_last_account", None)


def account_state(client: Any) -> dict[str, Any]:
    """The account's applied update state: pts, qts, date and seq."""
    state, _channels = client._message_box.session_state()
    return dict(state)


def last_channel_message(client: Any, channel_id: int) -> int | None:
    """The newest message id of the channel applied since the client was built."""
    ids = getattr(client._message_box, "rtg_last_ids", None)
    return None if ids is None else ids.get(channel_id)
