"""The fleet worker process of `FleetHarness` (``python -m
resilient_tg.testing._fleet_worker``): one Fleet, configured by the JSON in
``FLEET_WORKER_CONFIG``, that prints what happens, one JSON array per line, and drains
on SIGTERM (run_until_signal).

Lines: ["READY", worker_id], ["CLAIMED"|"CONNECTED"|"DISCONNECTED"|"RELEASED"|"LOST",
account, detail], ["MSG", account, text], ["EXITED", worker_id].
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from typing import Any

from telethon import events

from .._policy import KeepalivePolicy, ReconnectPolicy
from ..fleet import Fleet, FleetEvent
from ._trust import trust_test_server


def say(*parts: object) -> None:
    sys.stdout.write(json.dumps(parts) + "\n")
    sys.stdout.flush()


def exit_with_parent() -> None:
    """The harness holds our stdin: when it dies (even by kill -9), stdin ends and so do
    we, so a crashed test leaves no worker behind."""

    def watch() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked in a
        # buffered read would abort the interpreter's shutdown.
        while os.read(0, 4096):
            pass
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


async def main() -> int:
    exit_with_parent()
    cfg = json.loads(os.environ["FLEET_WORKER_CONFIG"])
    logging.basicConfig(
        level=cfg.get("log_level", "WARNING"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trust_test_server(cfg["pem"])
    keepalive = cfg.get("keepalive", (5.0, 5.0))
    fleet = Fleet(
        cfg["url"],
        cfg["api_id"],
        cfg["api_hash"],
        table_prefix=cfg["prefix"],
        worker_id=cfg["worker_id"],
        capacity=cfg.get("capacity"),
        lease_ttl=cfg.get("lease_ttl", 30.0),
        claim_interval=cfg.get("claim_interval", 5.0),
        max_moving=cfg.get("max_moving", 8),
        drain_timeout=cfg.get("drain_timeout", 20.0),
        keepalive=KeepalivePolicy(interval=keepalive[0], timeout=keepalive[1]),
        reconnect=ReconnectPolicy(initial_delay=0.05, max_delay=0.5, connect_timeout=5.0),
    )

    def report(event: FleetEvent) -> None:
        say(event.kind.upper(), event.account, event.detail)

    for kind in ("claimed", "connected", "disconnected", "released", "lost"):
        getattr(fleet, f"on_{kind}")(report)

    @fleet.on(events.NewMessage(incoming=True))
    async def on_message(event: Any) -> None:
        say("MSG", event.account, event.raw_text)

    async with fleet:
        say("READY", fleet.worker_id)
        await fleet.run_until_signal()
        say("DRAINING", fleet.worker_id)
    say("EXITED", fleet.worker_id)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
