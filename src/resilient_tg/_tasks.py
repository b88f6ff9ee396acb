"""TaskSet: the background tasks of one owner, started here and ended by ``aclose()``.

It does what an anyio task group does for a client — every task has an owner that
cancels and awaits it, ``start()`` hands back readiness through ``task_status`` — with
plain asyncio tasks. Measured with tracemalloc (Python 3.11, anyio 4): a task group
costs ~3.4 KB and each of its tasks ~3.3 KB, a bare task ~1.1 KB; in a fleet of
hundreds of clients per process that difference is most of our per-client overhead
over raw Telethon (``benchmarks/fleet.py``). The tasks do not belong to the owner's
cancel scope: the owner cancels them itself, in ``aclose()``, when it shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["TaskSet"]

log = logging.getLogger("resilient_tg.client")


class _Status:
    """The ``task_status`` handed to a task started with `TaskSet.start`."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def started(self, value: Any = None) -> None:
        if not self._future.done():
            self._future.set_result(value)


class TaskSet:
    """Tasks owned by one object; none outlives `aclose`."""

    __slots__ = ("_closed", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self, name: str, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> asyncio.Task[None] | None:
        """Run ``fn(*args)`` as a task of this set; None once the set is closed."""
        if self._closed:
            return None
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            fn(*args), name=f"resilient_tg {name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    async def start(self, name: str, fn: Callable[..., Coroutine[Any, Any, None]]) -> Any:
        """Run ``fn(task_status=...)`` and return once it calls ``task_status.started()``;
        an error raised before that is raised here."""
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = self.spawn(name, _with_status, fn, ready)
        if task is None:
            raise RuntimeError(f"cannot start {name}: the task set is closed")
        try:
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not ready.done():
                ready.cancel()
        if not ready.cancelled() and ready.done():
            return ready.result()
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        raise RuntimeError(f"{name} ended before it reported that it started")

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel every task and wait for them (tasks they spawn meanwhile too)."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._tasks:
            pending = set(self._tasks)
            for task in pending:
                task.cancel()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(pending, timeout=remaining)
        if self._tasks:
            names = ", ".join(sorted(t.get_name() for t in self._tasks))
            log.error("background tasks did not stop within %.1fs: %s", timeout, names)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Owners guard their tasks; anything arriving here is a bug worth a traceback.
            log.error("%s failed", task.get_name(), exc_info=exc)


async def _with_status(
    fn: Callable[..., Coroutine[Any, Any, None]], ready: asyncio.Future[Any]
) -> None:
    await fn(task_status=_Status(ready))
