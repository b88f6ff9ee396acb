"""A service process for subprocess tests: a ResilientClient on a FileStore that prints
what happens, one line per event, and leaves on SIGTERM (run_until_signal)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from telethon import events

from resilient_tg import KeepalivePolicy, ReconnectPolicy, ResilientClient
from resilient_tg.stores import FileStore
from resilient_tg.testing import trust_test_server


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def main() -> int:
    cfg = json.loads(os.environ["WORKER_CONFIG"])
    trust_test_server(cfg["pem"])
    client = ResilientClient(
        FileStore(cfg["session"]),
        cfg["api_id"],
        cfg["api_hash"],
        keepalive=KeepalivePolicy(interval=0.5, timeout=0.5),
        reconnect=ReconnectPolicy(initial_delay=0.05, max_delay=0.3, connect_timeout=3.0),
        lease_ttl=cfg.get("lease_ttl", 3.0),
        shutdown_timeout=cfg.get("shutdown_timeout", 5.0),
    )
    client.on_state_change(lambda change: say("STATE", change.new.value, change.detail))
    say("STARTING", time.time())
    async with client:
        say("LEASED", time.time())

        @client.telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: events.NewMessage.Event) -> None:
            say("MSG", event.raw_text)

        await client.wait_connected()
        say("READY", time.time())
        await client.run_until_signal()
        say("SIGNAL", time.time())
    say("EXITED", time.time(), client.state.value)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
