"""A child process for tests/test_status_limits.py: a ResilientClient serving /health
under a low RLIMIT_NOFILE.

Run as ``python -m tests.status_worker`` with the job (JSON) in ``RTG_STATUS_WORKER``:
the test server to reach, an auth key, and either ``limit`` (the soft RLIMIT_NOFILE
to set once the client is connected) or ``spare`` (how many descriptors to leave
above those open then). It
prints JSON lines: ``ready`` (the status URL, the limit), then ``status_error`` each
time ``health().status_error`` changes (with ``healthy``); "stop" on stdin ends it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from typing import Any

ENV = "RTG_STATUS_WORKER"


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _main(job: dict[str, Any]) -> None:
    from resilient_tg import ResilientClient
    from resilient_tg.stores import MemoryStore, SessionData
    from resilient_tg.testing import trust_test_server

    server = job["server"]
    trust_test_server(server["pem"])
    store = MemoryStore(
        SessionData(
            dc_id=server["dc_id"],
            server_address=server["host"],
            port=server["port"],
            auth_key=bytes.fromhex(job["auth_key"]),
        )
    )
    client = ResilientClient(
        store, server["api_id"], server["api_hash"], status_address="127.0.0.1:0"
    )
    stdin_done = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async with client:
        await client.wait_connected(20)
        open_fds = len(os.listdir("/proc/self/fd"))
        limit = int(job["limit"]) if "limit" in job else open_fds + int(job["spare"])
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        _emit("ready", url=client.status_url, limit=limit, open=open_fds)
        last: object = "unset"
        while not stdin_done.done():
            health = client.health()
            if health.status_error != last:
                last = health.status_error
                _emit("status_error", error=last, healthy=health.healthy)
            await asyncio.sleep(0.02)
        _emit("stopping", healthy=client.health().healthy)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        asyncio.run(_main(json.loads(os.environ[ENV])))
    except BaseException as exc:
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    main()
