"""A service process for subprocess tests: a ResilientClient on a FileStore (or the store
at ``store_url``) that prints what happens, one line per event, and leaves on SIGTERM
(run_until_signal).

With ``watch_lease`` it also prints ``LEASE <holder> <ours>`` whenever its health shows
the lease in other hands, and ``PACKED <held|unheld> <request>`` for every message
Telethon hands to the link (gives a msg_id, to encrypt with the key and send): "held"
when the lease was ours and not expired at that moment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

from telethon import events

from resilient_tg import KeepalivePolicy, ReconnectPolicy, ResilientClient
from resilient_tg.stores import FileStore, open_store
from resilient_tg.testing import trust_test_server


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def watch_lease(client: ResilientClient) -> None:
    """Print who holds the lease whenever that changes (health is cheap, no I/O)."""
    seen: tuple[str, bool] | None = None
    while True:
        lease = client.health().lease
        now = (lease.holder, lease.ours) if lease is not None else None
        if now is not None and now != seen:
            say("LEASE", *now)
        seen = now
        await asyncio.sleep(0.05)


class PackingTrace(logging.Handler):
    """Telethon's message packer logs each msg_id it assigns (at DEBUG): the moment a
    message is taken to be encrypted with the key and written to the link."""

    def __init__(self, client: ResilientClient) -> None:
        super().__init__(logging.DEBUG)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith("Assigned msg_id"):
            return
        lease = self.client.health().lease
        held = lease is not None and lease.ours and time.time() < lease.expires_at
        say("PACKED", "held" if held else "unheld", text.split(" to ", 1)[-1].split(" ")[0])


async def main() -> int:
    cfg = json.loads(os.environ["WORKER_CONFIG"])
    trust_test_server(cfg["pem"])
    url = cfg.get("store_url")
    client = ResilientClient(
        open_store(url) if url else FileStore(cfg["session"]),
        cfg["api_id"],
        cfg["api_hash"],
        keepalive=KeepalivePolicy(interval=0.5, timeout=0.5),
        reconnect=ReconnectPolicy(initial_delay=0.05, max_delay=0.3, connect_timeout=3.0),
        lease_ttl=cfg.get("lease_ttl", 3.0),
        shutdown_timeout=cfg.get("shutdown_timeout", 5.0),
        holder=cfg.get("holder"),
    )
    client.on_state_change(lambda change: say("STATE", change.new.value, change.detail))
    watching = bool(cfg.get("watch_lease"))
    if watching:
        packer = logging.getLogger("telethon.extensions.messagepacker")
        packer.setLevel(logging.DEBUG)
        packer.propagate = False
        packer.addHandler(PackingTrace(client))
    say("STARTING", time.time())
    async with client:
        say("LEASED", time.time())

        @client.telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: events.NewMessage.Event) -> None:
            say("MSG", event.raw_text)

        watcher = asyncio.ensure_future(watch_lease(client)) if watching else None
        await client.wait_connected()
        say("READY", time.time())
        await client.run_until_signal()
        say("SIGNAL", time.time())
        if watcher is not None:
            watcher.cancel()
    say("EXITED", time.time(), client.state.value)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
