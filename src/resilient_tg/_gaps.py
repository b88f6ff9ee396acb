"""Recovering a gap the server will not replay (channelDifferenceTooLong, differenceTooLong).

Telethon 1.45 answers channelDifferenceTooLong by moving the channel's pts to the
server's and delivering nothing: every message posted in the gap is silently skipped.
Here the update loop's getChannelDifference (see `_requests._difference`) gets
a "too long" answer replaced: the messages newer than the last one the handlers saw, up
to the dialog's top message, are fetched with messages.getHistory and handed back as an
ordinary, non-final channelDifference at the server's pts. Telethon then dispatches them
like any other difference (NewMessage handlers see each once, oldest first) and asks
again from that pts, so nothing posted meanwhile is skipped either. Each such gap is
reported once through the ``on_gap`` callbacks (`Gap`).

The account's own gap (differenceTooLong: private chats and basic groups) is recovered
the same way, by id: those messages share one id sequence per account, so the ones newer
than the last seen, up to the newest dialog's top message, are fetched with
messages.getMessages and handed back as a difference slice at the server's pts.

If fetching the history fails for a passing reason (no link within request_timeout, a
flood wait, a server error), the error propagates to Telethon's update loop, which
treats it like a failed difference and keeps the old pts: the gap is fetched again later,
never skipped. A refusal that retrying cannot fix (e.g. BOT_METHOD_INVALID: bots cannot
call getHistory) ends the recovery with what was fetched so far, reported as such, so
that the chat's later updates still flow.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from telethon import errors, utils
from telethon.tl import functions, types

from . import _compat
from ._gap import Gap, GapReason
from ._kinds import FLOOD, KEY_DEAD, TRANSIENT_RPC, describe

if TYPE_CHECKING:
    from ._core import ClientCore

__all__ = ["HISTORY_PAGE", "recover_account_gap", "recover_channel_gap"]

log = logging.getLogger("resilient_tg.client")

HISTORY_PAGE = 100  # messages per getHistory request (Telegram's maximum)

Send = Callable[["ClientCore", Any, bool], Awaitable[Any]]


async def recover_channel_gap(client: ClientCore, request: Any, too_long: Any, send: Send) -> Any:
    """Fetch the gap's messages and return them as a channelDifference at the new pts."""
    telegram = client._telegram
    channel = request.channel
    channel_id = int(channel.channel_id)
    chat_id = int(utils.get_peer_id(types.PeerChannel(channel_id)))
    _compat.feed_gap(telegram, [chat_id])  # a cache's span of the chat ends here
    after = _compat.last_channel_message(telegram, channel_id)
    top = int(getattr(too_long.dialog, "top_message", 0) or 0)
    users = list(too_long.users)
    chats = list(too_long.chats)
    messages: list[Any] = []
    refused: BaseException | None = None
    if after is not None and top > after:
        peer = types.InputPeerChannel(channel_id, channel.access_hash)
        messages, refused = await _history(client, send, peer, after, top, users, chats)
    gap = Gap(
        chat_id=chat_id,
        first_id=messages[0].id if messages else None,
        last_id=messages[-1].id if messages else None,
        count=len(messages),
        reason=GapReason.CHANNEL_DIFFERENCE_TOO_LONG,
    )
    if after is None:
        log.warning(
            "chat %d: the server will not replay a gap (channelDifferenceTooLong) and no "
            "earlier message of it was seen since start: its missed messages are not "
            "recovered",
            chat_id,
        )
    else:
        log.warning(
            "chat %d: the server will not replay a gap (channelDifferenceTooLong); "
            "recovered %d new message(s)%s with getHistory%s (edits and deletions in the "
            "gap are not recovered)",
            chat_id,
            gap.count,
            f" (ids {gap.first_id}-{gap.last_id})" if messages else "",
            f" before it was refused with {describe(refused)}" if refused else "",
        )
    client._callbacks.emit("gap", gap)
    pts = getattr(too_long.dialog, "pts", None)
    return types.updates.ChannelDifference(
        pts=pts if pts is not None else request.pts,
        new_messages=messages,
        other_updates=[],
        chats=chats,
        users=users,
        final=False,  # Telethon asks again from the new pts: nothing after it is skipped
        timeout=too_long.timeout,
    )


async def _history(
    client: ClientCore,
    send: Send,
    peer: Any,
    after: int,
    top: int,
    users: list[Any],
    chats: list[Any],
) -> tuple[list[Any], BaseException | None]:
    """Messages with ``after < id <= top``, oldest first (getHistory pages, newest first),
    and the error that refused a page, if one did (what came before it is kept)."""
    found: dict[int, Any] = {}
    refused: BaseException | None = None
    offset = top + 1
    while offset > after + 1:
        page, refused = await _fetch(client, send, _page_request(peer, offset, after, top))
        if refused is not None:
            break
        batch = [m for m in getattr(page, "messages", ()) if not isinstance(m, types.MessageEmpty)]
        users.extend(getattr(page, "users", ()))
        chats.extend(getattr(page, "chats", ()))
        for message in batch:
            if after < message.id <= top:
                found[message.id] = message
        lowest = min((m.id for m in batch), default=offset)
        if lowest >= offset:
            break  # an empty page, or a server that ignores offset_id: nothing older comes
        offset = lowest
    return [found[i] for i in sorted(found)], refused


def _page_request(peer: Any, offset: int, after: int, top: int) -> Any:
    """One getHistory page: up to HISTORY_PAGE messages older than ``offset``, in the gap."""
    return functions.messages.GetHistoryRequest(
        peer=peer,
        offset_id=offset,
        offset_date=None,
        add_offset=0,
        limit=HISTORY_PAGE,
        max_id=top + 1,
        min_id=after,
        hash=0,
    )


async def _fetch(client: ClientCore, send: Send, request: Any) -> tuple[Any, BaseException | None]:
    """(answer, None), or (None, error) for a refusal that retrying cannot fix; passing
    errors (and the client's own end) propagate: Telethon's update loop retries later."""
    try:
        return await send(client, request, False), None
    except (*FLOOD, *TRANSIENT_RPC, *KEY_DEAD, errors.UnauthorizedError):
        raise
    except errors.RPCError as exc:
        return None, exc


# The account: private chats and basic groups ---------------------------------------------


async def recover_account_gap(client: ClientCore, request: Any, too_long: Any, send: Send) -> Any:
    """differenceTooLong: fetch the account's messages newer than the last one the
    handlers saw (one id sequence for every private chat and basic group) and return them
    as a difference slice at the server's pts; Telethon then asks again from there."""
    telegram = client._telegram
    _compat.feed_gap(telegram, None)  # a cache's spans of non-channel chats end here
    after = _compat.last_account_message(telegram)
    users: list[Any] = []
    chats: list[Any] = []
    messages: list[Any] = []
    refused: BaseException | None = None
    if after is not None:
        dialogs, refused = await _fetch(client, send, _DIALOGS)
        if dialogs is not None:
            users += dialogs.users
            chats += dialogs.chats
            top = max(
                (
                    d.top_message
                    for d in dialogs.dialogs
                    if not isinstance(d.peer, types.PeerChannel)
                ),
                default=0,
            )
            messages, refused = await _account_messages(client, send, after, top, users, chats)
    _report_account(client, after, messages, refused)
    state = _compat.account_state(telegram)
    return types.updates.DifferenceSlice(
        new_messages=messages,
        new_encrypted_messages=[],
        other_updates=[],
        chats=chats,
        users=users,
        intermediate_state=types.updates.State(
            pts=too_long.pts,
            qts=state["qts"],
            date=state["date"],
            seq=state["seq"],
            unread_count=0,
        ),
    )


_DIALOGS = functions.messages.GetDialogsRequest(
    offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=100, hash=0
)


async def _account_messages(
    client: ClientCore, send: Send, after: int, top: int, users: list[Any], chats: list[Any]
) -> tuple[list[Any], BaseException | None]:
    """The account's messages with ``after < id <= top`` by id, oldest first."""
    found: dict[int, Any] = {}
    for start in range(after + 1, top + 1, HISTORY_PAGE):
        ids = range(start, min(start + HISTORY_PAGE, top + 1))
        request = functions.messages.GetMessagesRequest(id=[types.InputMessageID(i) for i in ids])
        page, refused = await _fetch(client, send, request)
        if page is None:
            return [found[i] for i in sorted(found)], refused
        users.extend(page.users)
        chats.extend(page.chats)
        for message in page.messages:
            if not isinstance(message, types.MessageEmpty) and after < message.id <= top:
                found[message.id] = message
    return [found[i] for i in sorted(found)], None


def _report_account(
    client: ClientCore, after: int | None, messages: list[Any], refused: BaseException | None
) -> None:
    """One Gap per chat that got messages back (chat_id 0 if none did), and a WARNING."""
    by_chat: dict[int, list[int]] = {}
    for message in messages:
        by_chat.setdefault(int(utils.get_peer_id(message.peer_id)), []).append(message.id)
    reason = GapReason.DIFFERENCE_TOO_LONG
    gaps = [Gap(chat, ids[0], ids[-1], len(ids), reason) for chat, ids in by_chat.items()]
    log.warning(
        "the server will not replay a gap in the account's updates (differenceTooLong); %s "
        "(edits and deletions in the gap are not recovered)",
        "no earlier message was seen since start, so nothing is recovered"
        if after is None
        else f"recovered {len(messages)} new message(s) in {len(gaps)} chat(s) with getMessages"
        + (f", before it was refused with {describe(refused)}" if refused else ""),
    )
    for gap in gaps or [Gap(0, None, None, 0, reason)]:
        client._callbacks.emit("gap", gap)
