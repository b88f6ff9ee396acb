"""The API methods that know about DCs: help.getConfig, help.getNearestDc,
auth.exportAuthorization / auth.importAuthorization, and the *_MIGRATE_X answers.

As on Telegram an account lives on one DC. Login calls for it on another DC answer
303 PHONE_MIGRATE_X (users) or USER_MIGRATE_X (bots); auth.sendCode answers
NETWORK_MIGRATE_X while `MTProtoTestServer.set_network_dc` is set. A key authorized on
a DC that is not the account's home (through auth.importAuthorization) may call only
what Telegram serves on every DC (`ANY_DC_NAMESPACES` and `ANY_DC_METHODS` in
`._api_base`, where `Api.call` checks them); anything else answers USER_MIGRATE_X, X
being the home DC.
"""

from __future__ import annotations

import time
from typing import Any

from telethon.tl import functions, types
from telethon.tl.types import auth as auth_t

from ._api_base import Api, CallContext, RpcFailure, _authorize, _date, _method


def check_phone_dc(api: Api, phone: str, ctx: CallContext, *, network: bool) -> None:
    """Send a login for ``phone`` to the DC that serves it.

    The phone's account is served on its home DC only (PHONE_MIGRATE_X). With
    ``network`` (auth.sendCode) and a network DC set, every other DC but the phone's
    home answers NETWORK_MIGRATE_X, so new numbers sign up on the network DC.
    """
    account = api.world.by_phone(phone)
    home = account.dc_id if account is not None else None
    network_dc = api._server.network_dc
    if network and network_dc is not None and ctx.dc_id not in (network_dc, home):
        raise RpcFailure(303, f"NETWORK_MIGRATE_{network_dc}")
    if home is not None and home != ctx.dc_id:
        raise RpcFailure(303, f"PHONE_MIGRATE_{home}")


# help -----------------------------------------------------------------------------


@_method(functions.help.GetConfigRequest, needs_auth=False)
def _get_config(api: Api, request: Any, ctx: CallContext) -> types.Config:
    server = api._server
    now = int(time.time())
    return types.Config(
        date=_date(now),
        expires=_date(now + 3600),
        test_mode=False,
        this_dc=ctx.dc_id,
        dc_options=[
            types.DcOption(id=dc, ip_address=host, port=port)
            for dc in server.dc_ids
            for host, port in [server.advertised_address(dc)]
        ],
        dc_txt_domain_name="localhost",
        chat_size_max=200,
        megagroup_size_max=200000,
        forwarded_count_max=100,
        online_update_period_ms=210000,
        offline_blur_timeout_ms=5000,
        offline_idle_timeout_ms=30000,
        online_cloud_timeout_ms=300000,
        notify_cloud_delay_ms=30000,
        notify_default_delay_ms=1500,
        push_chat_period_ms=60000,
        push_chat_limit=2,
        edit_time_limit=172800,
        revoke_time_limit=2147483647,
        revoke_pm_time_limit=2147483647,
        rating_e_decay=2419200,
        stickers_recent_limit=200,
        channels_read_media_period=604800,
        call_receive_timeout_ms=20000,
        call_ring_timeout_ms=90000,
        call_connect_timeout_ms=30000,
        call_packet_timeout_ms=10000,
        me_url_prefix="https://t.me/",
        caption_length_max=1024,
        message_length_max=4096,
        webfile_dc_id=server.dc_id,
    )


@_method(functions.help.GetNearestDcRequest, needs_auth=False)
def _get_nearest_dc(api: Api, request: Any, ctx: CallContext) -> types.NearestDc:
    network_dc = api._server.network_dc
    nearest = network_dc if network_dc is not None else ctx.dc_id
    return types.NearestDc(country="ZZ", this_dc=ctx.dc_id, nearest_dc=nearest)


# auth ---------------------------------------------------------------------------------


@_method(functions.auth.ExportAuthorizationRequest)
def _export_authorization(api: Api, request: Any, ctx: CallContext) -> auth_t.ExportedAuthorization:
    me = api.me(ctx)
    if me.dc_id != ctx.dc_id:
        raise RpcFailure(303, f"USER_MIGRATE_{me.dc_id}")  # exported from the home DC only
    if request.dc_id not in api._server.dc_ids:
        raise RpcFailure(400, "DC_ID_INVALID")
    token = api._server._export_auth(me.id, request.dc_id)
    return auth_t.ExportedAuthorization(id=me.id, bytes=token)


@_method(functions.auth.ImportAuthorizationRequest, needs_auth=False)
def _import_authorization(api: Api, request: Any, ctx: CallContext) -> auth_t.Authorization:
    account = api.world.accounts.get(request.id)
    if account is None or not api._server._take_export(request.id, request.bytes, ctx.dc_id):
        raise RpcFailure(400, "AUTH_BYTES_INVALID")
    return _authorize(api, ctx, account)
