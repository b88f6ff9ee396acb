"""Telethon's DC work handed to the owner: the DC switch, exported senders (links to other
DCs), and closing them."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from telethon import TelegramClient
from telethon.network import MTProtoSender
from telethon.tl import functions
from telethon.tl.alltlobjects import LAYER


class TelethonHooks:
    """Mixin for the TelegramClient subclass, handing Telethon's DC work to the owner.

    On *_MIGRATE_X at login Telethon calls ``_switch_dc`` inside the request
    (``client/users.py``) and reconnects with a plain ``connect()`` in the caller's task;
    here the owner's ``_rtg_switch_dc`` (the supervisor) does the switch. Exported
    senders (links to other DCs, for downloads): borrowing goes to ``_rtg_borrow``,
    requests on them to ``_rtg_exported_call``; ``_create_exported_sender`` is Telethon's
    with the connect timed out and the sender tracked (`close_exported`). ``_get_dc``
    reads this client's own help.getConfig: Telethon caches it on the class, shared by
    the clients of every server in the process."""

    _rtg_config: Any = None
    _rtg_exported: weakref.WeakSet[Any] | None = None

    # Telethon's own behaviour, for an instance without an owner (Telethon's CDN client
    # is built from the client's class): the subclass overrides these.
    async def _rtg_switch_dc(self, new_dc: int) -> None:
        await TelegramClient._switch_dc(self, new_dc)

    async def _rtg_borrow(self, dc_id: int, borrow: Any) -> Any:
        return await borrow(dc_id)

    async def _rtg_exported_call(self, sender: Any, request: Any, ordered: bool) -> Any:
        return await exported_call(self, sender, request, ordered)

    def _rtg_main_call(self, request: Any, ordered: bool) -> Any:
        return main_call(self, request, ordered)

    async def _switch_dc(self, new_dc: int) -> None:
        await self._rtg_switch_dc(int(new_dc))

    def _call(
        self, sender: Any, request: Any, ordered: bool = False, flood_sleep_threshold: Any = None
    ) -> Any:
        # Only Telethon's downloads call this directly (the request gate sends through
        # `main_call`): on the main sender they take the gate, on another its bounds.
        if sender is getattr(self, "_sender", None):
            return self._rtg_main_call(request, ordered)
        return self._rtg_exported_call(sender, request, ordered)

    async def _borrow_exported_sender(self, dc_id: int) -> Any:
        return await self._rtg_borrow(dc_id, super()._borrow_exported_sender)  # type: ignore[misc]

    async def _create_exported_sender(self, dc_id: int) -> Any:
        """Telethon's (telegrambaseclient.py), with the sender's connect timed out like the
        main link's, and closed again if anything after its connect fails or is cancelled."""
        me: Any = self
        dc = await self._get_dc(dc_id)
        # Telethon's own reconnect pacing (5 tries, 1 s apart): not the main link's
        # policy, which has no end; the owner bounds each request on it.
        sender = MTProtoSender(None, loggers=me._log, connect_timeout=me._timeout)
        if self._rtg_exported is None:
            self._rtg_exported = weakref.WeakSet()
        self._rtg_exported.add(sender)
        try:
            await sender.connect(
                me._connection(
                    dc.ip_address,
                    dc.port,
                    dc.id,
                    loggers=me._log,
                    proxy=me._proxy,
                    local_addr=me._local_addr,
                )
            )
            auth = await me(functions.auth.ExportAuthorizationRequest(dc_id))
            me._init_request.query = functions.auth.ImportAuthorizationRequest(
                id=auth.id, bytes=auth.bytes
            )
            await sender.send(functions.InvokeWithLayerRequest(LAYER, me._init_request))
        except BaseException:
            self._rtg_exported.discard(sender)
            await asyncio.shield(_close_sender(sender))
            raise
        return sender

    async def _get_dc(self, dc_id: int, cdn: bool = False) -> Any:
        if cdn:
            return await super()._get_dc(dc_id, cdn)  # type: ignore[misc]
        for fresh in (False, True):
            if self._rtg_config is None or fresh:
                self._rtg_config = await self(functions.help.GetConfigRequest())  # type: ignore[operator]
            option = _pick_dc(self._rtg_config, dc_id, bool(getattr(self, "_use_ipv6", False)))
            if option is not None:
                return option
        raise ValueError(f"the server lists no address for DC {dc_id} in help.getConfig")


def _pick_dc(config: Any, dc_id: int, ipv6: bool) -> Any:
    """DC ``dc_id``'s option: not CDN nor media-only, of the asked family if listed."""
    options = [
        o
        for o in getattr(config, "dc_options", ())
        if o.id == dc_id and not o.cdn and not getattr(o, "media_only", False)
    ]
    for option in options:
        if bool(option.ipv6) == ipv6:
            return option
    return options[0] if options else None


async def dc_address(client: Any, dc_id: int) -> tuple[str, int]:
    """(ip, port) of ``dc_id`` from the server's help.getConfig (see `TelethonHooks`)."""
    option = await client._get_dc(dc_id)
    return str(option.ip_address), int(option.port)


async def drop_main_link(client: Any) -> None:
    """Close the main link and stop Telethon's update and keepalive loops, keeping the
    session open (as Telethon's DC switch does); queued requests wait for connect()."""
    await client._disconnect()


def main_connection(client: Any) -> Any:
    """The connection object of the client's main sender (None before any connect)."""
    sender = getattr(client, "_sender", None)
    return getattr(sender, "_connection", None)


def main_call(client: Any, request: Any, ordered: bool) -> Any:
    """Telethon's ``__call__`` on the main sender, as a coroutine (the gate's try)."""
    return TelegramClient._call(client, client._sender, request, ordered=ordered)


async def exported_call(client: Any, sender: Any, request: Any, ordered: bool) -> Any:
    """Telethon's own request path on an exported sender."""
    return await TelegramClient._call(client, sender, request, ordered=ordered)


def abort_sender_link(sender: Any, error: BaseException) -> bool:
    """Close an exported sender's socket (Telethon then reconnects and resends)."""
    conn = getattr(sender, "_connection", None)
    abort = getattr(conn, "abort", None)
    if abort is None or not getattr(conn, "_connected", False):
        return False
    abort(error)
    return True


async def _close_sender(sender: Any) -> None:
    try:
        await sender.disconnect()
    except Exception:  # noqa: BLE001 - Telethon's disconnect "should never raise"
        logging.getLogger("resilient_tg.client").debug("closing an exported sender failed")


async def forget_exported(client: Any, sender: Any) -> None:
    """Close an exported sender whose link failed us; the next borrow connects it anew."""
    await _close_sender(sender)
    for state, borrowed in list(getattr(client, "_borrowed_senders", {}).values()):
        if borrowed is sender:
            state._connected = False  # as Telethon's disconnect() does for a borrowed one


async def close_unconnected_exported(client: Any) -> None:
    """After a cut-short borrow: close the senders it left half-connected."""
    async with client._borrow_sender_lock:
        for state, sender in list(client._borrowed_senders.values()):
            if not sender.is_connected() and getattr(sender, "_connection", None) is not None:
                await _close_sender(sender)
                state._connected = False


async def close_exported(client: Any) -> None:
    """Close every exported sender this client opened that is still open."""
    tracked = getattr(client, "_rtg_exported", None)
    for sender in list(tracked or ()):
        if sender.is_connected() or getattr(sender, "_connection", None) is not None:
            await _close_sender(sender)


def has_exported(client: Any) -> bool:
    """Whether senders to other DCs exist (Telethon's keepalive loop cleaned them up)."""
    return bool(getattr(client, "_borrowed_senders", None))


async def clean_exported(client: Any) -> None:
    """Disconnect exported senders nobody borrowed for a while (what Telethon's keepalive
    loop did every 60 s)."""
    await client._clean_exported_senders()
