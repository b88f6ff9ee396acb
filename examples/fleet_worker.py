"""A fleet worker: runs its fair share of the Telegram accounts in one SQL database.

    pip install 'resilient-tg[postgres]'
    export RESILIENT_TG_FLEET_DB=postgresql://fleet@db.internal/telegram
    export TG_API_ID=12345 TG_API_HASH=0123abcd...        # or --api-hash-file PATH
    python examples/fleet_worker.py --capacity 500 --status-address 0.0.0.0:8081

Run as many as you like, on as many hosts (one per container or systemd unit): they
share the accounts through leases in the database, take over a dead worker's accounts
once its leases expire, and even out when one joins. SIGTERM drains (the others take
the accounts at once), so a rolling deploy loses nothing. Accounts are added with
``resilient-tg fleet add``; see docs/fleets.md.

``--status-address`` serves ``GET /health`` (200 while the worker's claim rounds reach
the database, else 503) and ``GET /status`` (always 200), both with
``fleet.health().to_dict()`` as JSON: point a liveness probe at ``/health``.

Offline, in one command: ``python examples/fleet_worker.py --demo`` starts a local test
server, a SQLite database with six accounts and two workers, kills one with SIGKILL and
shows its accounts move to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telethon import events

from resilient_tg import KeepalivePolicy
from resilient_tg.fleet import Fleet, FleetEvent

log = logging.getLogger("fleet_worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("RESILIENT_TG_FLEET_DB"))
    parser.add_argument("--api-id", type=int, default=int(os.environ.get("TG_API_ID", "0")))
    parser.add_argument("--api-hash-file", help="a file holding the api_hash (else $TG_API_HASH)")
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--table-prefix", default=None)
    parser.add_argument("--status-address", default=None, help="HOST:PORT for /health")
    parser.add_argument("--test-server-key", help="trust this test server's key (PEM file)")
    parser.add_argument("--fast", action="store_true", help="short leases (demos and tests)")
    parser.add_argument("--demo", action="store_true", help="run the offline demo")
    return parser.parse_args(argv)


async def serve_status(fleet: Fleet, address: str) -> asyncio.AbstractServer:
    """A tiny HTTP endpoint for probes: /health (200 or 503) and /status (200)."""
    host, port = address.rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        path = request.split(b" ")[1] if request.count(b" ") >= 2 else b"/"
        health = fleet.health()
        code = 200 if path == b"/status" or health.healthy else 503
        body = json.dumps(health.to_dict()).encode()
        writer.write(
            f"HTTP/1.1 {code} {'OK' if code == 200 else 'Service Unavailable'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, int(port))


async def run_worker(args: argparse.Namespace) -> int:
    if not args.db or not args.api_id:
        print("give --db (or RESILIENT_TG_FLEET_DB) and --api-id (or TG_API_ID)", file=sys.stderr)
        return 2
    api_hash = args.api_hash
    if args.test_server_pem:
        from resilient_tg.testing import trust_test_server

        trust_test_server(args.test_server_pem)
    options: dict[str, Any] = {}
    if args.fast:  # a 1 s server-side timeout allows a 3 s lease
        options.update(
            keepalive=KeepalivePolicy(interval=0.5, timeout=0.5), lease_ttl=3.0, claim_interval=0.5
        )
    fleet = Fleet(
        args.db,
        args.api_id,
        api_hash,
        capacity=args.capacity,
        table_prefix=args.table_prefix,
        **options,
    )

    def report(event: FleetEvent) -> None:
        print(
            f"{fleet.worker_id}: {event.kind} {event.account} {event.detail}".rstrip(), flush=True
        )

    for kind in ("claimed", "connected", "released", "lost"):
        getattr(fleet, f"on_{kind}")(report)

    @fleet.on(events.NewMessage(incoming=True))
    async def on_message(event: Any) -> None:
        # event.account names the account the message came to.
        print(f"{fleet.worker_id}: {event.account} got {event.raw_text!r}", flush=True)

    async with fleet:
        server = await serve_status(fleet, args.status_address) if args.status_address else None
        print(f"{fleet.worker_id}: running", flush=True)
        await fleet.run_until_signal()
        if server is not None:
            server.close()
    print(f"{fleet.worker_id}: drained and stopped", flush=True)
    return 0


async def demo() -> int:
    """Two workers over one SQLite database on this host; one is killed; watch."""
    from resilient_tg.fleet import FleetAdmin
    from resilient_tg.stores import SessionData
    from resilient_tg.testing import MTProtoTestServer

    async with MTProtoTestServer() as server:
        folder = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
        db = f"sqlite:///{folder / 'fleet.db'}"
        pem = folder / "server.pem"
        pem.write_text(server.public_key_pem)
        async with FleetAdmin(db) as admin:
            for i in range(6):
                user = server.create_user(f"+1555000{i:04d}", f"Account {i}")
                key = server.issue_auth_key(user.id)
                data = SessionData(
                    dc_id=server.dc_id,
                    server_address=server.host,
                    port=server.port,
                    auth_key=key,
                    ever_authorized=True,
                )
                await admin.add(f"account-{i}", data)
        env = {**os.environ, "TG_API_ID": str(server.api_id), "TG_API_HASH": server.api_hash}
        command = [sys.executable, __file__, "--db", db, "--test-server-key", str(pem), "--fast"]
        workers = [
            await asyncio.create_subprocess_exec(*command, env=env, stdout=subprocess.PIPE)
            for _ in range(2)
        ]
        lines: list[str] = []
        owner: dict[str, asyncio.subprocess.Process] = {}  # worker id -> its process

        async def pump(process: asyncio.subprocess.Process) -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                line = raw.decode().rstrip()
                owner.setdefault(line.partition(": ")[0], process)
                lines.append(line)
                print(f"  {line}")

        pumps = [asyncio.create_task(pump(w)) for w in workers]

        def connected() -> dict[str, str]:
            where: dict[str, str] = {}
            for line in lines:
                who, _, rest = line.partition(": ")
                parts = rest.split()
                if parts[:1] == ["connected"]:
                    where[parts[1]] = who
                elif parts[:1] in (["released"], ["lost"]):
                    where.pop(parts[1], None)
            return where

        async def until(predicate: Any, limit: float) -> None:
            deadline = time.monotonic() + limit
            while not predicate(connected()):
                if time.monotonic() > deadline:
                    raise TimeoutError("the demo did not get there in time")
                await asyncio.sleep(0.1)

        try:
            print("two workers share six accounts:")
            await until(lambda c: len(c) == 6 and len(set(c.values())) == 2, 60)
            victim_id = sorted(set(connected().values()))[0]
            victim = owner[victim_id]
            survivor = next(w for w in workers if w is not victim)
            mine = sorted(a for a, w in connected().items() if w == victim_id)
            print(f"killing {victim_id} (SIGKILL) with {', '.join(mine)}:")
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            killed = time.monotonic()
            lines[:] = [line for line in lines if not line.startswith(victim_id)]
            await until(lambda c: len(c) == 6 and victim_id not in c.values(), 60)
            print(
                f"all six accounts connected on the survivor {time.monotonic() - killed:.1f}s later"
            )
            survivor.send_signal(signal.SIGTERM)
            await survivor.wait()
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
            for task in pumps:
                task.cancel()
        print("demo done: the killed worker's accounts moved")
    return 0


def main() -> int:
    args = parse_args()
    # Files are read here, before the event loop runs.
    if args.api_hash_file:
        args.api_hash = Path(args.api_hash_file).read_text().strip()
    else:
        args.api_hash = os.environ.get("TG_API_HASH", "")
    key = args.test_server_key
    args.test_server_pem = Path(key).read_text() if key else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(demo() if args.demo else run_worker(args))


if __name__ == "__main__":
    sys.exit(main())
