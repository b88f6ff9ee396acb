"""Child processes of the fleet and memory scenarios: spec out, JSON lines back.

The parent keeps the server; the child runs N clients of one kind, so its RSS and CPU
are the clients' alone. The spec (auth keys included) goes through a file only the
user can read, deleted once the child has read it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path
from typing import Any

from resilient_tg.testing import MTProtoTestServer

from ._common import new_user

__all__ = ["Child", "cpu_seconds", "emit", "server_spec"]

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def server_spec(server: MTProtoTestServer, n: int, name: str) -> dict[str, Any]:
    """Where the server is and ``n`` fresh accounts' keys, one per client."""
    users = [new_user(server, f"{name}{i}") for i in range(n)]
    return {
        "host": server.host,
        "port": server.port,
        "dc_id": server.dc_id,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
        "pem": server.public_key_pem,
        "keys": [server.issue_auth_key(u.id).hex() for u in users],
    }


class Child:
    """``python -m MODULE SPEC.json``, talked to line by line (stdin and stdout)."""

    def __init__(self, module: str, spec: dict[str, Any], tmp: Path, name: str) -> None:
        self.module = module
        self.path = tmp / f"{name}.json"
        self.path.write_text(json.dumps(spec))
        self.path.chmod(0o600)
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Child:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def read(self, limit: float) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), limit)
        if not line:
            raise RuntimeError(f"{self.module} ended early (exit {await self.process.wait()})")
        self.path.unlink(missing_ok=True)  # read by now: the keys leave the disk
        data: dict[str, Any] = json.loads(line)
        return data

    def kill(self) -> None:
        """Done with it: no need to wait for N clients to shut down one by one."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def write(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()
