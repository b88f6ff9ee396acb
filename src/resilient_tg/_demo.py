"""The offline demo behind ``resilient-tg demo``: a ResilientClient on a FileStore
survives scripted faults against the local MTProto test server, and every message
sent to it is counted.

No credentials, no internet: MTProtoTestServer and FaultProxy run in-process. The
faults: a reset, refused connects, a black hole (found by the keepalive), a server
restart, and a process restart that resumes from the stored session without logging
in again. For each: how long until the loss was detected, until the client was
CONNECTED again, and how many messages were sent, received and duplicated. What
the demo prints (console, log lines, the report) is in `._demo_report`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
from telethon import events

from ._client import ResilientClient
from ._demo_report import Console, DemoReport, FaultResult, demo_logging, render_report
from ._policy import KeepalivePolicy, ReconnectPolicy
from ._state import ConnectionState, StateChange
from .stores import FileStore, SessionData
from .testing import FaultProxy, MTProtoTestServer

__all__ = [
    "DEFAULT",
    "FAST",
    "Console",
    "DemoReport",
    "DemoSettings",
    "FaultResult",
    "render_report",
    "run_demo",
]


@attrs.frozen
class DemoSettings:
    """How hard the demo pushes: policies, messages per step, how long connects are refused."""

    keepalive: KeepalivePolicy
    reconnect: ReconnectPolicy
    messages: int
    refuse_seconds: float
    step_timeout: float


DEFAULT = DemoSettings(
    keepalive=KeepalivePolicy(interval=1.0, timeout=1.0),  # dead links found within 2 s
    reconnect=ReconnectPolicy(initial_delay=0.2, max_delay=2.0, connect_timeout=5.0),
    messages=3,
    refuse_seconds=3.0,
    step_timeout=30.0,
)
FAST = DemoSettings(
    keepalive=KeepalivePolicy(interval=0.5, timeout=0.5),  # dead links found within 1 s
    reconnect=ReconnectPolicy(initial_delay=0.05, max_delay=0.5, connect_timeout=3.0),
    messages=2,
    refuse_seconds=1.0,
    step_timeout=15.0,
)


class _StepFailed(Exception):
    """A step did not complete in time; the demo stops and reports what it has."""


async def run_demo(settings: DemoSettings, console: Console) -> DemoReport:
    """Run every fault against an in-process test server; never raises for a failed step."""
    started = time.monotonic()
    with demo_logging(console), tempfile.TemporaryDirectory(prefix="resilient-tg-demo-") as tmp:
        async with (
            MTProtoTestServer(data_dir=Path(tmp) / "server") as server,
            FaultProxy(server.host, server.port) as proxy,
        ):
            demo = _Demo(server, proxy, Path(tmp) / "alice.session", settings, console)
            async with anyio.create_task_group() as tg:
                if console.live:
                    tg.start_soon(demo.show_status)
                await demo.run()
                tg.cancel_scope.cancel()
    console.finish()
    return demo.report(time.monotonic() - started, fast=settings is FAST)


class _Demo:
    def __init__(
        self,
        server: MTProtoTestServer,
        proxy: FaultProxy,
        path: Path,
        settings: DemoSettings,
        console: Console,
    ) -> None:
        self.server = server
        self.proxy = proxy
        self.path = path
        self.settings = settings
        self.console = console
        self.alice = server.create_user("+15550001", "Alice")
        self.bob = server.create_user("+15550002", "Bob")
        self.received: collections.Counter[str] = collections.Counter()
        self.sent: list[str] = []
        self.changes: list[StateChange] = []
        self.changed = asyncio.Event()
        self.client: ResilientClient | None = None
        self.phase = "starting"
        self.results: list[FaultResult] = []
        self.error: str | None = None

    # The script ---------------------------------------------------------------------

    async def run(self) -> None:
        # Point a new session at the test server, through the proxy.
        await FileStore(self.path).save(
            SessionData(
                dc_id=self.server.dc_id, server_address=self.proxy.host, port=self.proxy.port
            )
        )
        try:
            async with self._client() as client:
                await self._bounded(client.wait_connected(), "the first connection")
                telegram = client.telegram
                await self._bounded(telegram.send_code_request(self.alice.phone), "login")
                await self._bounded(
                    telegram.sign_in(self.alice.phone, self.server.login_code(self.alice.phone)),
                    "login",
                )
                self.console.line(f"logged in as Alice (test user); session in {self.path}")
                self.phase = "before faults"
                await self._send("before faults")
                await self._bounded(self._all_arrived(), "the first messages")
                await self._faults_while_running()
            if self.error is None:
                await self._process_restart()
        except _StepFailed as exc:
            self.error = str(exc)
        # Late duplicates would show up now; a short, bounded settle.
        await asyncio.sleep(0.2)

    async def _faults_while_running(self) -> None:
        refuse = self.settings.refuse_seconds

        async def reset() -> None:
            self.proxy.reset()

        async def refused() -> None:
            self.proxy.refuse(refuse)
            self.proxy.reset()  # the live link goes; every reconnect is refused for a while
            await self._send("during refusal")

        async def blackhole() -> None:
            self.proxy.blackhole()  # the link stays open, every byte is dropped
            await self._send("into the black hole")

        async def heal_when_detected() -> None:
            self.proxy.heal()

        async def restart() -> None:
            await self.server.restart()

        steps: list[tuple[str, str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]
        steps = [
            ("reset", "reset", reset, _nothing),
            ("refused", f"refused {refuse:g}s", refused, _nothing),
            ("blackhole", "black hole", blackhole, heal_when_detected),
            ("server_restart", "server restart", restart, _nothing),
        ]
        for name, label, inject, after_detection in steps:
            result = await self._fault(name, label, inject, after_detection)
            self.results.append(result)
            self._announce(result)
            if result.error is not None:
                self.error = f"stopped after {label}: {result.error}"
                return

    async def _fault(
        self,
        name: str,
        label: str,
        inject: Callable[[], Awaitable[None]],
        after_detection: Callable[[], Awaitable[None]],
    ) -> FaultResult:
        self.phase = label
        first = len(self.sent)
        start = time.time()
        detected = recovered = None
        reason = None
        error = None
        try:
            await inject()
            lost = await self._bounded(
                self._change_after(start, lambda c: c.old.link_up and not c.new.link_up),
                f"{label}: detecting the loss",
            )
            detected, reason = lost.at - start, lost.reason.value
            await after_detection()
            back = await self._bounded(
                self._change_after(start, lambda c: c.new is ConnectionState.CONNECTED),
                f"{label}: reconnecting",
            )
            recovered = back.at - start
            await self._send(f"after {label}")
            await self._bounded(self._all_arrived(), f"{label}: delivering every message")
        except _StepFailed as exc:
            error = str(exc)
        return self._result(name, label, first, detected, recovered, reason, error)

    async def _process_restart(self) -> None:
        label = "process restart"
        self.phase = label
        first = len(self.sent)
        # A new process would do exactly this: resume from the file, no login.
        await self._send("while stopped")
        start = time.time()
        recovered = None
        error = None
        try:
            async with self._client() as client:
                back = await self._bounded(
                    self._change_after(start, lambda c: c.new is ConnectionState.CONNECTED),
                    f"{label}: reconnecting",
                )
                recovered = back.at - start
                if not client.health().authorized:
                    raise _StepFailed(f"{label}: the resumed session had to log in again")
                await self._bounded(self._all_arrived(), f"{label}: delivering every message")
                await asyncio.sleep(0.2)  # late duplicates would show up now
        except _StepFailed as exc:
            error = str(exc)
            self.error = f"stopped after {label}: {error}"
        result = self._result("process_restart", label, first, None, recovered, "restart", error)
        self.results.append(result)
        self._announce(result)

    # Pieces ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self) -> Any:
        client = ResilientClient(
            FileStore(self.path),
            self.server.api_id,
            self.server.api_hash,
            keepalive=self.settings.keepalive,
            reconnect=self.settings.reconnect,
            shutdown_timeout=5.0,
        )
        client.on_state_change(self._record)
        async with client:
            client.telegram.add_event_handler(self._on_message, events.NewMessage(incoming=True))
            self.client = client
            try:
                yield client
            finally:
                self.client = None

    def _record(self, change: StateChange) -> None:
        self.changes.append(change)
        self.changed.set()

    async def _on_message(self, event: Any) -> None:
        self.received[event.raw_text] += 1
        self.changed.set()

    async def _send(self, label: str) -> None:
        for i in range(self.settings.messages):
            text = f"{label} #{i + 1}"
            await self.server.send_message(self.bob.id, self.alice.id, text)
            self.sent.append(text)

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            with anyio.move_on_after(0.05):
                await self.changed.wait()

    async def _all_arrived(self) -> None:
        await self._wait(lambda: all(self.received[t] for t in self.sent))

    async def _change_after(
        self, start: float, predicate: Callable[[StateChange], bool]
    ) -> StateChange:
        found: list[StateChange] = []

        def seen() -> bool:
            found[:] = [c for c in self.changes if c.at >= start and predicate(c)][:1]
            return bool(found)

        await self._wait(seen)
        return found[0]

    async def _bounded(self, awaitable: Awaitable[Any], what: str) -> Any:
        limit = self.settings.step_timeout
        try:
            with anyio.fail_after(limit):
                return await awaitable
        except TimeoutError:
            raise _StepFailed(f"{what} did not finish within {limit:g}s") from None
        except Exception as exc:
            raise _StepFailed(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def _result(
        self,
        name: str,
        label: str,
        first: int,
        detected: float | None,
        recovered: float | None,
        reason: str | None,
        error: str | None,
    ) -> FaultResult:
        texts = self.sent[first:]
        return FaultResult(
            name=name,
            label=label,
            detected=detected,
            recovered=recovered,
            sent=len(texts),
            received=sum(self.received[t] for t in texts),
            duplicated=sum(max(0, self.received[t] - 1) for t in texts),
            lost=sum(1 for t in texts if not self.received[t]),
            reason=reason,
            error=error,
        )

    def _announce(self, result: FaultResult) -> None:
        if result.error is not None:
            self.console.line(f"{result.label}: FAILED ({result.error})")
            return
        found = (
            f"found in {result.detected:.2f}s ({result.reason}), "
            if result.detected is not None
            else ""
        )
        self.console.line(
            f"{result.label}: {found}connected again after {result.recovered or 0.0:.2f}s; "
            f"{result.received}/{result.sent} messages arrived"
        )

    async def show_status(self) -> None:
        """The live status line (TTY only): state, rtt, attempt, messages received."""
        while True:
            client = self.client
            if client is None:
                state, rtt, attempt = "stopped", "-", 0
            else:
                health = client.health()
                state = health.state.value
                rtt = f"{health.rtt * 1000:.0f}ms" if health.rtt is not None else "-"
                attempt = health.attempt
            arrived = sum(1 for t in self.sent if self.received[t])
            self.console.status(
                f"[{self.phase}] state {state} | rtt {rtt} | attempt {attempt} | "
                f"messages {arrived}/{len(self.sent)}"
            )
            await anyio.sleep(0.1)

    def report(self, elapsed: float, *, fast: bool) -> DemoReport:
        return DemoReport(
            faults=tuple(self.results),
            sent=len(self.sent),
            received=sum(self.received[t] for t in self.sent),
            duplicated=sum(max(0, self.received[t] - 1) for t in self.sent),
            lost=sum(1 for t in self.sent if not self.received[t]),
            elapsed=elapsed,
            fast=fast,
            error=self.error,
        )


async def _nothing() -> None:
    return None
