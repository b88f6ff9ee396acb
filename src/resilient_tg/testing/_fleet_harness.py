"""FleetHarness: start, stop, pause and kill fleet worker processes, and follow what each
one runs from the lines it prints.

A worker is ``python -m resilient_tg.testing._fleet_worker``: one `Fleet` against the
harness's database and test server that prints each fleet event and each incoming
message as a JSON line (see that module). With `MTProtoTestServer.max_links_per_key`,
a test proves that no auth key ever had two links open at once whatever the workers
went through (kill -9, SIGSTOP, a database partition through a `FaultProxy`, a rolling
restart). Set ``RESILIENT_TG_TEST_FLEET_LOGS=DIR`` (and ``RESILIENT_TG_TEST_FLEET_LOG_LEVEL``,
e.g. INFO) to keep each worker's log in
``DIR/<name>.log``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ._server import MTProtoTestServer

__all__ = ["FleetHarness", "FleetProcess"]

#: The worker's module, run with ``python -m``.
WORKER_MODULE = "resilient_tg.testing._fleet_worker"


class FleetProcess:
    """One worker process: its accounts (claimed, connected) and messages, as printed."""

    def __init__(self, name: str, process: anyio.abc.Process) -> None:
        self.name = name
        self.process = process
        self.accounts: set[str] = set()
        self.connected: set[str] = set()
        self.messages: collections.Counter[tuple[str, str]] = collections.Counter()
        self.lines: list[tuple[float, list[str]]] = []
        self.exited = False

    def _take(self, parts: list[str]) -> None:
        kind = parts[0]
        if kind == "CLAIMED":
            self.accounts.add(parts[1])
        elif kind == "CONNECTED":
            self.connected.add(parts[1])
        elif kind == "DISCONNECTED":
            self.connected.discard(parts[1])
        elif kind in ("RELEASED", "LOST"):
            self.accounts.discard(parts[1])
            self.connected.discard(parts[1])
        elif kind == "MSG":
            self.messages[(parts[1], parts[2])] += 1

    def kinds(self, kind: str) -> list[list[str]]:
        return [parts for _, parts in self.lines if parts[0] == kind]

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT, SIGTERM...) to the worker."""
        self.process.send_signal(signal.Signals(signum))

    def gone(self) -> None:
        """It was killed: it runs nothing any more."""
        self.exited = True
        self.accounts.clear()
        self.connected.clear()


class FleetHarness:
    """Worker processes of one fleet, on ``url`` (tables ``prefix``) and ``server``.

    The keyword arguments configure every worker (a start may override them):
    ``keepalive`` as ``(interval, timeout)``, ``lease_ttl``, ``claim_interval``,
    ``capacity``, ``max_moving``, ``drain_timeout``, ``log_level`` (the worker's log
    goes to stderr). Workers are tasks of ``group``'s owner: `aclose` kills what is
    left, and a worker also exits when the harness's process dies (its stdin closes).
    `until` waits for a condition on what the workers printed; ``changed`` is set after
    every line.
    """

    def __init__(
        self,
        group: anyio.abc.TaskGroup,
        server: MTProtoTestServer,
        url: str,
        prefix: str,
        **cfg: Any,
    ) -> None:
        self.group = group
        self.server = server
        self.url = url
        self.prefix = prefix
        self.cfg = cfg
        self.workers: dict[str, FleetProcess] = {}
        self._changed = anyio.Event()

    async def start(self, name: str, *, url: str | None = None, **extra: Any) -> FleetProcess:
        cfg = {
            "pem": self.server.public_key_pem,
            "api_id": self.server.api_id,
            "api_hash": self.server.api_hash,
            "url": url or self.url,
            "prefix": self.prefix,
            "worker_id": name,
            **self.cfg,
            **extra,
        }
        level = os.environ.get("RESILIENT_TG_TEST_FLEET_LOG_LEVEL")  # e.g. INFO, with LOGS
        if level:
            cfg.setdefault("log_level", level)
        env = {**os.environ, "FLEET_WORKER_CONFIG": json.dumps(cfg)}
        log_dir = os.environ.get("RESILIENT_TG_TEST_FLEET_LOGS")  # for debugging: a file each
        stderr: Any = None if not log_dir else open(Path(log_dir) / f"{name}.log", "ab")  # noqa: SIM115, ASYNC230
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", WORKER_MODULE], env=env, stdin=-1, stdout=-1, stderr=stderr
            )
        finally:
            if stderr is not None:
                stderr.close()  # the worker has its own copy of the descriptor
        worker = FleetProcess(name, process)
        self.workers[name] = worker
        self.group.start_soon(self._pump, worker)
        return worker

    async def ready(self, *names: str, limit: float = 60) -> None:
        """Wait until the workers have entered their Fleet (their first round is done)."""
        workers = [self.workers[n] for n in names]
        await self.until(lambda: all(w.kinds("READY") or w.exited for w in workers), limit)
        for worker in workers:
            assert not worker.exited, f"worker {worker.name} exited before it was ready"

    async def _pump(self, worker: FleetProcess) -> None:
        assert worker.process.stdout is not None
        buffer = b""
        async for chunk in worker.process.stdout:
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                parts = json.loads(raw)
                worker.lines.append((time.monotonic(), parts))
                worker._take(parts)
                self._wake()
        await worker.process.wait()
        worker.exited = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Callable[[], bool], limit: float) -> None:
        """Wait until ``predicate()`` holds after some worker printed something."""
        with anyio.fail_after(limit):
            while not predicate():
                await self._changed.wait()

    async def kill(self, name: str) -> None:
        worker = self.workers[name]
        worker.signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await worker.process.wait()
        worker.gone()
        self._wake()

    async def stop(self, name: str, limit: float = 40) -> int:
        """SIGTERM: the worker drains and exits."""
        worker = self.workers[name]
        worker.signal(signal.SIGTERM)
        with anyio.fail_after(limit):
            code = await worker.process.wait()
        await self.until(lambda: worker.exited, limit)
        return code

    async def aclose(self) -> None:
        for worker in self.workers.values():
            if worker.process.returncode is None:
                worker.signal(signal.SIGCONT)
                worker.signal(signal.SIGKILL)
                with anyio.move_on_after(10):
                    await worker.process.wait()

    # Views ------------------------------------------------------------------------

    def live(self) -> list[FleetProcess]:
        return [w for w in self.workers.values() if not w.exited]

    def connected(self, *, but: FleetProcess | None = None) -> dict[str, str]:
        """Account -> a live worker (other than ``but``) that reported it CONNECTED and
        not released or lost since. Two workers' lines may cross during a handover; the
        server's record of links per key, not this, proves no key ran twice."""
        return {
            account: worker.name
            for worker in self.live()
            if worker is not but
            for account in worker.connected
        }

    def received(self) -> collections.Counter[tuple[str, str]]:
        total: collections.Counter[tuple[str, str]] = collections.Counter()
        for worker in self.workers.values():
            total.update(worker.messages)
        return total

    def story(self, missing: list[tuple[str, str]]) -> str:
        """What each worker printed about the accounts of messages that never arrived."""
        accounts = sorted({account for account, _ in missing})[:3]
        out = [f"{len(missing)} message(s) never arrived: {missing[:10]}; the first accounts:"]
        lines = sorted(
            (at, worker.name, parts)
            for worker in self.workers.values()
            for at, parts in worker.lines
            if len(parts) > 1 and parts[1] in accounts
        )
        out += [f"  {at:.2f} {name}: {parts}" for at, name, parts in lines]
        return "\n".join(out[:120])
