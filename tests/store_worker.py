"""A child process for the session-store tests, and the parent's handle on it.

Run as ``python -m tests.store_worker`` (or by path) with the job in the
``RTG_WORKER`` environment variable (JSON). It speaks JSON lines on stdout (events)
and reads plain lines on stdin (a login code, "go", "release"). Modes:

- ``login``: log a raw Telethon client (StoreSession) in to the test server, then
  disconnect and flush, so the session (key, entities, update state) is in the store.
- ``resume``: connect with the stored session; report whether it is authorized; catch
  up and report the messages that arrived while it was away.
- ``save_loop``: save to a FileStore as fast as possible until killed.
- ``zygote``: imports everything once, then on each "fork" line forks a ``save_loop``
  child (it reports its pid) and on "wait PID" reaps it: 200 kills stay cheap.
- ``lease``: race for a FileStore lease on "go"; hold it (optionally renewing) until
  killed or told to "release".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ENV = "RTG_WORKER"
ROOT = str(Path(__file__).resolve().parent.parent)  # where "python -m tests.store_worker" runs
STEP = 20.0  # bounds every network step in the child


# Parent side ----------------------------------------------------------------------------


class Worker:
    """A running child: read its JSON events, write lines to it, kill it."""

    def __init__(self, process: Any, log_path: Path) -> None:
        from anyio.streams.buffered import BufferedByteReceiveStream

        self.process = process
        self.log_path = log_path
        self._out = BufferedByteReceiveStream(process.stdout)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next event; fails with the child's log if it ends or stalls first."""
        import anyio

        try:
            with anyio.fail_after(timeout):
                line = await self._out.receive_until(b"\n", 1 << 20)
        except (anyio.EndOfStream, anyio.IncompleteRead, TimeoutError) as exc:
            raise AssertionError(
                f"worker {self.pid} sent no event ({type(exc).__name__}); log:\n{self.log()}"
            ) from None
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "error":
            raise AssertionError(f"worker {self.pid} failed: {event['error']}\n{self.log()}")
        return event

    async def expect(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        event = await self.event(timeout)
        assert event["event"] == name, f"expected {name!r}, got {event}; log:\n{self.log()}"
        return event

    async def send(self, line: str) -> None:
        await self.process.stdin.send(line.encode() + b"\n")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()  # SIGKILL: no cleanup of any kind runs

    async def wait(self, timeout: float = 30.0) -> int:
        import anyio

        with anyio.fail_after(timeout):
            return int(await self.process.wait())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def start_worker(job: dict[str, Any], log_path: Path) -> AsyncIterator[Worker]:
    """Start a worker for ``job``; it is killed (if still running) when the block ends."""
    import anyio

    env = {**os.environ, ENV: json.dumps(job)}
    log_file = await anyio.open_file(log_path, "ab")
    try:
        process = await anyio.open_process(
            [sys.executable, "-m", "tests.store_worker"],
            stdin=-1,
            stdout=-1,
            stderr=log_file.wrapped,
            env=env,
            cwd=ROOT,
        )
    finally:
        await log_file.aclose()
    worker = Worker(process, log_path)
    try:
        yield worker
    finally:
        worker.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


def server_job(server: Any) -> dict[str, Any]:
    """What a child needs to reach an MTProtoTestServer running in the parent."""
    return {
        "pem": server.public_key_pem,
        "dc_id": server.dc_id,
        "host": server.host,
        "port": server.port,
        "api_id": server.api_id,
        "api_hash": server.api_hash,
    }


# Child side -----------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _readline() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def _store(spec: dict[str, Any]) -> Any:
    from resilient_tg.stores import EnvStringStore, FileStore

    if spec["kind"] == "file":
        return FileStore(spec["path"], encryption_key=spec.get("key"))
    if spec["kind"] == "env":
        fallback = _store(spec["fallback"]) if spec.get("fallback") else None
        return EnvStringStore(spec["var"], fallback=fallback)
    if spec["kind"] == "sql":
        from resilient_tg.stores import SQLStore

        return SQLStore(spec["url"], name=spec["name"], table_prefix=spec["table_prefix"])
    raise ValueError(f"unknown store kind {spec['kind']!r}")


async def _client(job: dict[str, Any]) -> tuple[Any, Any]:
    from telethon import TelegramClient

    from resilient_tg.stores import StoreSession
    from resilient_tg.testing import trust_test_server

    server = job["server"]
    trust_test_server(server["pem"])
    session = await StoreSession.open(_store(job["store"]))
    if session.snapshot() is None:
        session.set_dc(server["dc_id"], server["host"], server["port"])
    client = TelegramClient(
        session,
        server["api_id"],
        server["api_hash"],
        catch_up=True,
        flood_sleep_threshold=0,
        request_retries=1,
        retry_delay=0.1,
    )
    await asyncio.wait_for(client.connect(), STEP)
    return client, session


async def _login(job: dict[str, Any]) -> None:
    client, session = await _client(job)
    try:
        _emit("connected", authorized=await client.is_user_authorized())
        phone = job["phone"]
        await asyncio.wait_for(client.send_code_request(phone), STEP)
        _emit("code_requested")
        code = await asyncio.wait_for(_readline(), STEP)
        me = await asyncio.wait_for(client.sign_in(phone, code), STEP)
        _emit("logged_in", id=me.id)
    finally:
        # disconnect() writes update state and entities into the session; aclose()
        # makes them durable in the store.
        await asyncio.wait_for(client.disconnect(), STEP)
        await asyncio.wait_for(session.aclose(), STEP)
    _emit("done")


async def _resume(job: dict[str, Any]) -> None:
    from telethon import events

    client, session = await _client(job)
    texts: list[str] = []
    all_in = asyncio.Event()

    async def on_message(event: Any) -> None:
        texts.append(event.raw_text)
        if len(texts) >= job["expect_messages"]:
            all_in.set()

    client.add_event_handler(on_message, events.NewMessage(incoming=True))
    try:
        authorized = await asyncio.wait_for(client.is_user_authorized(), STEP)
        me = await asyncio.wait_for(client.get_me(), STEP) if authorized else None
        _emit("resumed", authorized=authorized, id=me.id if me else None)
        if authorized and job["expect_messages"]:
            await asyncio.wait_for(client.catch_up(), STEP)
            await asyncio.wait_for(all_in.wait(), STEP)
        _emit("messages", texts=texts)
    finally:
        await asyncio.wait_for(client.disconnect(), STEP)
        await asyncio.wait_for(session.aclose(), STEP)
    _emit("done")


def consistent_data(i: int, entities: int) -> Any:
    """Session number ``i``: every field derived from ``i``, so a mix of two is visible."""
    from resilient_tg.stores import Entity, SessionData, UpdateState

    return SessionData(
        dc_id=2,
        server_address="127.0.0.1",
        port=1 + i % 65535,
        auth_key=bytes((i + n) % 256 for n in range(256)),
        update_state=UpdateState(pts=i, qts=i, date=i, seq=i, channels={1: i}),
        entities=tuple(
            Entity(id=n + 1, access_hash=i * 100_000 + n, username=f"user{n}_{i}", name="x" * 40)
            for n in range(entities)
        ),
    )


def check_consistent(data: Any) -> int:
    """The ``i`` of a session written by ``consistent_data``; AssertionError if mixed."""
    i = int(data.update_state.pts)
    assert data == consistent_data(i, len(data.entities)), f"session {i} is a mix of saves"
    return i


async def _save_loop(job: dict[str, Any]) -> None:
    from resilient_tg.stores import FileStore

    store = FileStore(job["path"])
    loaded = await store.load()
    i = check_consistent(loaded) + 1 if loaded is not None else 0
    first = True
    while True:
        await store.save(consistent_data(i, job["entities"]))
        if first:
            _emit("ready", first=i, pid=os.getpid())
            first = False
        i += 1


async def _lease(job: dict[str, Any]) -> None:
    from resilient_tg import SessionInUseError
    from resilient_tg.stores import FileStore

    store = FileStore(job["path"])
    holder = job["holder"]
    _emit("ready")
    if await _readline() != "go":
        return
    try:
        lease = await store.acquire_lease(holder, job["ttl"])
    except SessionInUseError as exc:
        _emit("in_use", holder=exc.holder, expires_at=exc.expires_at, message=str(exc))
        return
    _emit("won", holder=lease.holder, token=lease.token, expires_at=lease.expires_at)
    if job.get("renew"):

        async def renew() -> None:
            while True:
                await asyncio.sleep(job["ttl"] / 3)
                await store.renew_lease(holder, job["ttl"])

        task = asyncio.get_running_loop().create_task(renew())
    line = await _readline()  # "release", or killed before
    if job.get("renew"):
        task.cancel()
    if line == "release":
        await store.release_lease(holder)
        _emit("released")


def _zygote(job: dict[str, Any]) -> None:
    import signal

    import resilient_tg.stores  # noqa: F401 - imported once, inherited by every child

    _emit("ready")
    for line in sys.stdin:
        command = line.split()
        if command == ["fork"]:
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                try:
                    asyncio.run(_save_loop(job))
                except BaseException:
                    logging.getLogger(__name__).exception("save_loop child failed")
                finally:
                    os._exit(1)
        elif command[:1] == ["wait"]:
            _, status = os.waitpid(int(command[1]), 0)
            _emit(
                "dead",
                pid=int(command[1]),
                signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            )
        else:
            return


async def _amain(job: dict[str, Any]) -> None:
    modes = {"login": _login, "resume": _resume, "save_loop": _save_loop, "lease": _lease}
    await modes[job["mode"]](job)


def main() -> None:
    job = json.loads(os.environ[ENV])
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("telethon").setLevel(logging.INFO)
    try:
        if job["mode"] == "zygote":
            _zygote(job)
        else:
            asyncio.run(_amain(job))
    except Exception as exc:
        logging.getLogger(__name__).exception("worker failed")
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
