"""The gap-aware message box: which difference request Telethon's update loop makes, and
the newest message id applied per channel."""

from __future__ import annotations

import functools
from typing import Any

from telethon.tl import types

from ._check import TelethonCompatError

# The message box ------------------------------------------------------------------------
# Telethon answers channelDifferenceTooLong by jumping to the server's pts and delivering
# nothing (_updates/messagebox.py, apply_channel_difference). To recover such a gap, the
# client needs two things the box does not offer: which getChannelDifference request the
# update loop is making (so that only its answer is handled), and the newest message id
# of each channel already handed to the handlers (where the gap starts). A subclass of
# MessageBox, put in place of the client's before it first connects, records both.


class BrokenChannel:
    """Fed when Telethon stops following a channel (banned): its chain ends there."""

    __slots__ = ("channel_id",)

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id


class GapMark:
    """Fed before a "too long" gap's recovered messages: the chain of ``chat_ids`` (None:
    every private chat and basic group of the account) ends there."""

    __slots__ = ("chat_ids",)

    def __init__(self, chat_ids: list[int] | None) -> None:
        self.chat_ids = chat_ids


@functools.cache
def _gap_box_class() -> Any:
    from telethon._updates.messagebox import ENTRY_ACCOUNT, MessageBox, PrematureEndReason
    from telethon.tl import types

    class GapAwareMessageBox(MessageBox):  # type: ignore[misc]  # Telethon is untyped
        """Telethon's MessageBox, noting each channel's newest applied message id and the
        channel-difference request being made."""

        __slots__ = (
            "_rtg_in_diff",
            "_rtg_users_chats",
            "rtg_account_request",
            "rtg_ended",
            "rtg_feed",
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
            # The update feed (MessageCache): called with (update, users, chats, entry_pts)
            # for every update the box applies, in the order it applies them, before the
            # update is queued for the handlers (own outgoing updates included).
            self.rtg_feed: Any = None
            self._rtg_in_diff = 0
            self._rtg_users_chats: tuple[Any, Any] = ((), ())

        def process_updates(self, updates: Any, chat_hashes: Any, result: Any) -> Any:
            if self.rtg_feed is not None and not self._rtg_in_diff:
                users = getattr(updates, "users", None) or ()
                chats = getattr(updates, "chats", None) or ()
                self._rtg_users_chats = (users, chats)
            return super().process_updates(updates, chat_hashes, result)

        def get_difference(self) -> Any:
            request = super().get_difference()
            self.rtg_account_request = request
            return request

        def apply_difference(self, diff: Any, chat_hashes: Any) -> Any:
            self._rtg_in_diff += 1
            try:
                result = super().apply_difference(diff, chat_hashes)
            finally:
                self._rtg_in_diff -= 1
            self.rtg_ended += 1
            for update in result[0]:
                self._rtg_note(update)
            self._rtg_feed_all(diff, self.map.get(ENTRY_ACCOUNT), types.UpdateNewMessage)
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
                feed = self.rtg_feed
                if feed is not None and not self._rtg_in_diff:
                    feed(applied, *self._rtg_users_chats, 0)
            return applied

        def apply_channel_difference(self, request: Any, diff: Any, chat_hashes: Any) -> Any:
            self._rtg_in_diff += 1
            try:
                result = super().apply_channel_difference(request, diff, chat_hashes)
            finally:
                self._rtg_in_diff -= 1
            for update in result[0]:
                self._rtg_note(update)
            entry = self.map.get(request.channel.channel_id)
            self._rtg_feed_all(diff, entry, types.UpdateNewChannelMessage)
            return result

        def end_channel_difference(self, request: Any, reason: Any, chat_hashes: Any) -> None:
            super().end_channel_difference(request, reason, chat_hashes)
            if self.rtg_feed is not None and reason == PrematureEndReason.BANNED:
                # The channel's updates stop here: whatever follows is never delivered.
                self.rtg_feed(BrokenChannel(request.channel.channel_id), (), (), 0)

        def _rtg_feed_all(self, diff: Any, entry: Any, wrap: Any) -> None:
            """Feed a difference whole: its other updates (edits, deletions, reads), which
            the box drops while the entry is being fetched, and its new messages, which
            carry no pts of their own, so they get the entry's pts after it (they were on
            the server by then). A replay of what was applied live merges as a no-op."""
            feed = self.rtg_feed
            if feed is None or not hasattr(diff, "new_messages"):
                return
            pts = int(getattr(entry, "pts", 0) or 0)
            users, chats = diff.users, diff.chats
            for update in diff.other_updates:
                feed(update, users, chats, pts)
            for message in diff.new_messages:
                feed(wrap(message=message, pts=0, pts_count=0), users, chats, pts)

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


def set_update_feed(client: Any, feed: Any) -> None:
    """Call ``feed(update, users, chats, pts)`` for every update the message box applies,
    in order (None: stop). The client's box must be the gap-aware one."""
    box = client._message_box
    if not hasattr(box, "rtg_feed"):
        raise TelethonCompatError("the update feed needs the gap-aware message box")
    box.rtg_feed = feed


def feed_gap(client: Any, chat_ids: list[int] | None) -> None:
    """Tell the update feed (if any) that a gap ends the chains of ``chat_ids`` (None:
    the account's private chats and basic groups), before its recovered messages."""
    feed = getattr(client._message_box, "rtg_feed", None)
    if feed is not None:
        feed(GapMark(chat_ids), (), (), 0)


def box_pts(client: Any, channel_id: int | None) -> int:
    """The pts the box has applied for a channel (None: the account), 0 when unknown."""
    box = client._message_box
    if channel_id is None:
        return 0 if box.is_empty() else int(box.session_state()[0]["pts"])
    entry = box.map.get(channel_id)
    return int(getattr(entry, "pts", 0) or 0)


def follow_channel(client: Any, channel_id: int, pts: int, users: Any, chats: Any) -> None:
    """Make the box follow a channel from ``pts`` (a history answer's) if it does not yet,
    as Telethon's get_dialogs does: its later updates, and after a reconnect its
    difference, are then fetched. ``users``/``chats`` give the box the access hashes."""
    client._mb_entity_cache.extend(users, chats)
    if pts > 0:
        client._message_box.try_set_channel_state(channel_id, pts)


def box_state(client: Any) -> tuple[dict[str, Any], dict[int, int]] | None:
    """The box's applied state (account pts/qts/date/seq, channel id -> pts), or None."""
    box = client._message_box
    if box.is_empty():
        return None
    state, channels = box.session_state()
    return dict(state), {int(k): int(v) for k, v in channels.items()}


def box_update_states(client: Any) -> list[tuple[int, Any]] | None:
    """The box's applied state in the shape of ``Session.get_update_states()`` (entity id
    0 for the account, a channel id for each channel), for connect() to load; None while
    the box is empty. (Telethon's connect(), telegrambaseclient.py, reads ``pts``,
    ``qts``, ``date`` and ``seq`` of entry 0 and ``pts`` of the others.)"""
    current = box_state(client)
    if current is None:
        return None
    state, channels = current
    date = state["date"]
    states: list[tuple[int, Any]] = [
        (0, types.updates.State(state["pts"], state["qts"], date, state["seq"], 0))
    ]
    states.extend(
        (channel_id, types.updates.State(pts, 0, date, 0, 0))
        for channel_id, pts in channels.items()
    )
    return states


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
