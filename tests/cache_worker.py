"""A process with a cached client, for the crash test: a ResilientClient on a FileStore
with a MessageCache on SQLite. It reads each chat once (anchoring spans), prints
``READY``, then prints ``MSG <text>`` for every new message until it is killed."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from telethon import events

from resilient_tg import KeepalivePolicy, ReconnectPolicy, ResilientClient
from resilient_tg.cache import MessageCache, SQLCacheBackend
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
        flush_interval=0.05,
    )
    cache = MessageCache(client, SQLCacheBackend(cfg["cache_url"]))
    async with client:

        @client.telegram.on(events.NewMessage(incoming=True))
        async def on_message(event: events.NewMessage.Event) -> None:
            say("MSG", event.raw_text)

        await client.wait_connected()
        await cache.dialogs(10)  # learns the chats' entities
        for chat in cfg["chats"]:
            await cache.history(chat, limit=20)
        say("READY")
        await asyncio.Event().wait()  # until killed
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
