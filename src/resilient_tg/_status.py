"""Health publishing: a status file and a tiny HTTP endpoint, for probes that must not
open the session (a second process opening it would hit the lease or get the key
revoked).

The publisher is one of the client's background tasks. The file holds ``Health.to_dict()``
plus ``written_at`` and ``pid``; it is replaced atomically (temp file + rename) on
every transition and at least every second, and marked with the final state when the
client exits. The HTTP server answers ``GET /health`` (200 when healthy, else 503) and
``GET /status`` (always 200) with the same JSON. Health holds no secrets.

The endpoint must outlive anything a network or a misbehaving prober can do: at most
``max_connections`` connections are open at once (a new one evicts the oldest that has
not yet sent its request), a connection gets ``idle_timeout`` seconds to send its
request, running out of file descriptors (EMFILE/ENFILE) while accepting backs off and
keeps accepting, and if serving or writing ever fails otherwise it is restarted. What
went wrong shows in ``Health.status_error`` until it recovers. The file is written with
`resilient_tg._safefile.write_atomically` (no link at its path or its temp path is
followed).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, cast

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from ._safefile import remove_stale_temp_files, write_atomically
from ._state import ConnectionState, Health, StateChange

__all__ = ["Reporter", "StatusPublisher", "parse_address", "status_document"]

log = logging.getLogger("resilient_tg.status")

_MAX_HEAD = 8192
# How long a connection may take to send its request, and to take its answer.
IDLE_TIMEOUT = 5.0
# Open connections at most; a probe needs one, a few probers a handful.
MAX_CONNECTIONS = 64
# accept() errors that say "not now" (out of descriptors or memory), not "this
# listener is broken"; and those that concern only the one connection (it died in the
# backlog), which are skipped.
_TEMPORARY_ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_CONNECTION_ACCEPT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO})
_BACKOFF_MIN = 0.05
# After closing an idle connection to free a descriptor: long enough for it to close.
_EVICTION_PAUSE = 0.01
# An accept() error shows in health this long after it last happened.
_ACCEPT_ERROR_SHOWN = 2.0
_BACKOFF_MAX = 1.0
_RESTART_MAX = 5.0
# A part that ran this long before failing restarts after the shortest delay again.
_STABLE_AFTER = 30.0
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


class Reporter(Protocol):
    """What is published (the client): a health snapshot, without I/O."""

    def health(self) -> Health: ...


def status_document(client: Reporter) -> dict[str, Any]:
    """What is published: the health snapshot plus when and by which process."""
    document = client.health().to_dict()
    document["written_at"] = time.time()
    document["pid"] = os.getpid()
    return document


class _Connection:
    """One accepted connection: its cancel scope (to evict it) and whether it is
    being answered (then it is not evicted)."""

    __slots__ = ("answering", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.answering = False


class StatusPublisher:
    """Keeps a status file current and/or serves /health and /status (see module doc)."""

    def __init__(
        self,
        client: Reporter,
        *,
        file: str | os.PathLike[str] | None,
        address: str | None,
        interval: float = 1.0,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._client = client
        self._file = Path(file) if file is not None else None
        self._address = parse_address(address) if address is not None else None
        self._interval = interval
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._wake = anyio.Event()
        self._bound: tuple[str, int] | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._connections: dict[int, _Connection] = {}  # oldest first
        self._http_error: str | None = None
        self._accept_error = ""
        self._accept_error_at: float | None = None
        self._file_error: str | None = None
        self._swept = False

    @property
    def url(self) -> str | None:
        """``http://host:port`` once the HTTP server listens."""
        if self._bound is None:
            return None
        host, port = self._bound
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def error(self) -> str | None:
        """What keeps the endpoint or the file from working right now (None when both
        work); shown as ``Health.status_error``."""
        accept_error = (
            self._accept_error
            if self._accept_error_at is not None
            and time.monotonic() - self._accept_error_at <= _ACCEPT_ERROR_SHOWN
            else None
        )
        errors = [e for e in (self._http_error, accept_error, self._file_error) if e]
        return "; ".join(errors) if errors else None

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
        if self._address is not None:
            host, port = self._address
            self._listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            sockname = self._listener.extra(anyio.abc.SocketAttribute.local_address)
            self._bound = (str(sockname[0]), int(sockname[1]))
            log.info("serving health on %s/health", self.url)
        try:
            async with anyio.create_task_group() as tg:
                if self._listener is not None:
                    tg.start_soon(self._keep_running, "the status endpoint", self._serve)
                task_status.started()
                if self._file is not None:
                    await self._keep_running("the status file writer", self._write_loop)
        finally:
            with anyio.CancelScope(shield=True):
                if self._listener is not None:
                    await self._listener.aclose()
                if self._file is not None:
                    await self._write(final=True)

    async def _keep_running(self, what: str, part: Callable[[], Awaitable[None]]) -> None:
        """Run ``part`` forever: if it fails, say so (log and health), wait, restart it."""
        delay = _BACKOFF_MIN
        while True:
            started = time.monotonic()
            try:
                await part()
                error = "it returned"  # pragma: no cover - both parts loop forever
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # whatever it was, keep publishing
                error = f"{type(exc).__name__}: {exc}"
                if _unexpected(exc):
                    log.exception("%s stopped (%s); restarting it", what, error)
                else:
                    log.error("%s stopped (%s); restarting it", what, error)  # noqa: TRY400 - an OS error needs no traceback
            if time.monotonic() - started >= _STABLE_AFTER:
                delay = _BACKOFF_MIN
            self._set_part_error(part, f"{what} stopped ({error}); restarting it")
            await anyio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX)
            if part == self._serve:
                await self._rebind()

    def _set_part_error(self, part: Callable[[], Awaitable[None]], error: str) -> None:
        if part == self._serve:
            self._http_error = error
        else:
            self._file_error = error

    async def _rebind(self) -> None:
        """A new listener on the address we were serving (same port), until it works."""
        assert self._bound is not None
        if self._listener is not None:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()
            self._listener = None
        host, port = self._bound
        delay = _BACKOFF_MIN
        while True:
            try:
                self._listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
            except OSError as exc:
                self._http_error = (
                    f"the status endpoint is down: cannot listen on {self.url} again "
                    f"({exc.strerror or exc}); retrying"
                )
                log.warning("%s", self._http_error)
                await anyio.sleep(delay)
                delay = min(delay * 2, _RESTART_MAX)
                continue
            log.info("serving health on %s/health again", self.url)
            self._http_error = None
            return

    # HTTP.

    async def _serve(self) -> None:
        """Accept on every socket of the listener; raises when a listener breaks."""
        assert self._listener is not None
        listeners = getattr(self._listener, "listeners", [self._listener])
        failures: list[Exception] = []

        async def accept_on(listener: anyio.abc.SocketListener) -> None:
            try:
                await self._accept_loop(listener, tg)
            except Exception as exc:  # noqa: BLE001 - one broken listener: restart all, raise it
                failures.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(accept_on, cast("anyio.abc.SocketListener", listener))
        if failures:
            raise failures[0]

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup
    ) -> None:
        delay = _BACKOFF_MIN
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _CONNECTION_ACCEPT_ERRORS:
                    continue
                if exc.errno not in _TEMPORARY_ACCEPT_ERRORS:
                    raise
                self._accept_failed(exc)
                # Out of descriptors: the oldest idle connection makes room for a probe
                # (its descriptor is closed within a few loop iterations).
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._evict_oldest():
                    await anyio.sleep(_EVICTION_PAUSE)
                else:
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_MIN
            if len(self._connections) >= self._max_connections and not self._evict_oldest():
                with anyio.CancelScope(shield=True):
                    await stream.aclose()  # every slot is answering: no room
                continue
            connection = _Connection()
            self._connections[id(connection)] = connection
            tg.start_soon(self._handle, stream, connection)

    def _accept_failed(self, exc: OSError) -> None:
        """Remember (for health) and log once per episode an accept() that failed."""
        now = time.monotonic()
        if self._accept_error_at is None or now - self._accept_error_at > _ACCEPT_ERROR_SHOWN:
            log.warning(
                "the status endpoint cannot accept connections (%s; %d open); "
                "closing idle ones, backing off and accepting again",
                exc.strerror or exc,
                len(self._connections),
            )
        self._accept_error = (
            f"the status endpoint could not accept connections ({exc.strerror or exc}); "
            "it keeps accepting"
        )
        self._accept_error_at = now

    def _evict_oldest(self) -> bool:
        """Close the oldest connection still waiting for its request; False if none."""
        for connection in self._connections.values():
            if not connection.answering and not connection.scope.cancel_called:
                connection.scope.cancel()
                return True
        return False

    async def _handle(self, stream: anyio.abc.SocketStream, connection: _Connection) -> None:
        """One request per connection; anything unexpected closes it quietly."""
        try:
            async with stream:
                with connection.scope:
                    with anyio.move_on_after(self._idle_timeout):
                        head = await _read_head(stream)
                    if head is None or connection.scope.cancel_called:
                        return
                    connection.answering = True
                    with anyio.move_on_after(self._idle_timeout):
                        await stream.send(self._respond(head))
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 - a bad client must not stop the server
            log.debug("status request failed: %s", exc)
        finally:
            self._connections.pop(id(connection), None)

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

    # The file.

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
        sweep = not self._swept
        try:
            await anyio.to_thread.run_sync(_write_status_file, self._file, payload, sweep)
        except OSError as exc:
            error = _describe_write_error(self._file, exc)
            if error != self._file_error:  # once per distinct error, not every second
                log.warning("%s", error)
            self._file_error = error
        else:
            self._swept = True
            if self._file_error is not None:
                log.info("the status file %s is written again", self._file)
            self._file_error = None


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


def _write_status_file(path: Path, payload: bytes, sweep: bool) -> None:
    """Replace the status file atomically (see `write_atomically`); readable by all, as
    probers may run as another user. Not fsync'ed: it is rewritten every second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep:  # temp files of a publisher that died mid-write; once per publisher
        remove_stale_temp_files(path.parent, path.name)
    write_atomically(path, payload, mode=0o644, durable=False, what=f"the status file {path}")


def _describe_write_error(path: Path, exc: OSError) -> str:
    """Names the status file once: our own refusals already name it."""
    if exc.strerror is None:  # raised by _safefile with the path in its message
        return f"{exc}; the status file is not written"
    where = exc.filename if exc.filename is not None else path
    return f"cannot write the status file {path}: {exc.strerror} ({where})"


def _unexpected(exc: BaseException) -> bool:
    """A traceback helps only for what the network or the OS cannot cause."""
    return not isinstance(exc, (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError))
