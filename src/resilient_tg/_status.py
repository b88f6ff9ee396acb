"""Health publishing: a status file and a tiny HTTP endpoint, for probes that must not
open the session (a second process opening it would hit the lease or get the key
revoked).

The publisher is one of the client's background tasks. The file holds ``Health.to_dict()``
plus ``written_at`` and ``pid``; it is replaced atomically (temp file + rename) on
every transition and at least every second, and marked with the final state when the
client exits. The HTTP server answers ``GET /health`` (200 when healthy, else 503) and
``GET /status`` (always 200) with the same JSON. Health holds no secrets.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from ._state import ConnectionState, StateChange

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["StatusPublisher", "parse_address", "status_document"]

log = logging.getLogger("resilient_tg.status")

_MAX_HEAD = 8192
_REQUEST_TIMEOUT = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def parse_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8081"``, ``"[::1]:8081"`` or ``":8081"`` (loopback) -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"status_address must look like '127.0.0.1:8081' (host:port), got {address!r}"
        )
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def status_document(client: ResilientClient) -> dict[str, Any]:
    """What is published: the health snapshot plus when and by which process."""
    document = client.health().to_dict()
    document["written_at"] = time.time()
    document["pid"] = os.getpid()
    return document


class StatusPublisher:
    """Keeps a status file current and/or serves /health and /status (see module doc)."""

    def __init__(
        self,
        client: ResilientClient,
        *,
        file: str | os.PathLike[str] | None,
        address: str | None,
        interval: float = 1.0,
    ) -> None:
        self._client = client
        self._file = Path(file) if file is not None else None
        self._address = parse_address(address) if address is not None else None
        self._interval = interval
        self._wake = anyio.Event()
        self._bound: tuple[str, int] | None = None
        self._last_write_error: str | None = None

    @property
    def url(self) -> str | None:
        """``http://host:port`` once the HTTP server listens."""
        if self._bound is None:
            return None
        host, port = self._bound
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    # ClientListener: called inline by the client.

    def on_transition(self, change: StateChange) -> None:
        self._wake.set()

    def on_pong(self, rtt: float) -> None:
        pass

    def on_save(self, duration: float, error: BaseException | None) -> None:
        pass

    # The task.

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the HTTP server (a failure raises at once), then publish until cancelled."""
        listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        if self._address is not None:
            host, port = self._address
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
            self._bound = (str(sockname[0]), int(sockname[1]))
            log.info("serving health on %s/health", self.url)
        try:
            async with anyio.create_task_group() as tg:
                if listener is not None:
                    tg.start_soon(listener.serve, self._handle)
                task_status.started()
                if self._file is not None:
                    await self._write_loop()
        finally:
            with anyio.CancelScope(shield=True):
                if listener is not None:
                    await listener.aclose()
                if self._file is not None:
                    await self._write(final=True)

    async def _write_loop(self) -> None:
        while True:
            self._wake = anyio.Event()  # before writing: a transition meanwhile wakes us
            await self._write()
            with anyio.move_on_after(self._interval):
                await self._wake.wait()

    async def _write(self, *, final: bool = False) -> None:
        assert self._file is not None
        document = status_document(self._client)
        if final and not ConnectionState(document["state"]).terminal:
            document["state"] = ConnectionState.CLOSED.value
            document["healthy"] = False
        payload = (json.dumps(document, sort_keys=True) + "\n").encode()
        try:
            await anyio.to_thread.run_sync(_write_atomically, self._file, payload)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._last_write_error:  # once per distinct error, not every second
                log.warning("cannot write the status file %s: %s", self._file, error)
            self._last_write_error = error
        else:
            self._last_write_error = None

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        """One request per connection; anything unexpected closes it quietly."""
        try:
            async with stream:
                with anyio.move_on_after(_REQUEST_TIMEOUT):
                    head = await _read_head(stream)
                    if head is None:
                        return
                    await stream.send(self._respond(head))
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 - a bad client must not stop the server
            log.debug("status request failed: %s", exc)

    def _respond(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method = parts[0] if parts else ""
        path = parts[1].split("?", 1)[0] if len(parts) > 1 else ""
        if path not in ("/health", "/status"):
            return _response(404, {"error": "not found; try /health or /status"}, method)
        if method not in ("GET", "HEAD"):
            return _response(405, {"error": "only GET and HEAD"}, method)
        document = status_document(self._client)
        code = 200 if path == "/status" or document["healthy"] else 503
        return _response(code, document, method)


async def _read_head(stream: anyio.abc.SocketStream) -> bytes | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            return None
        try:
            buffer += await stream.receive(4096)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    return buffer


def _response(code: int, document: dict[str, Any], method: str) -> bytes:
    body = (json.dumps(document, sort_keys=True) + "\n").encode()
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


def _write_atomically(path: Path, payload: bytes) -> None:
    """Temp file + rename, so a reader never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
