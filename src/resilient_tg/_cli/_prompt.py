"""Asking the user: questions on stderr, answers from a terminal or a pipe.

Reading happens in a daemon thread, so the event loop (and a client's link) keeps
running while the user types, and Ctrl-C is not held up by a blocked read.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ._common import EXIT_AUTH, CliError

__all__ = ["Prompter"]

T = TypeVar("T")


class Prompter:
    """Asks questions on stderr and reads the answers, from a terminal or a pipe.

    On a terminal, secrets go through getpass (no echo). Otherwise each answer is one
    line of standard input. Reading happens in a daemon thread, so the client keeps
    its link alive meanwhile and Ctrl-C is not held up by a blocked read.
    """

    def __init__(self, stdin: Any = None, stderr: Any = None) -> None:
        self._stdin = stdin if stdin is not None else sys.stdin
        self._stderr = stderr if stderr is not None else sys.stderr

    def say(self, message: str) -> None:
        print(message, file=self._stderr, flush=True)

    async def line(self, prompt: str) -> str:
        """One line of text (phone, code), stripped."""
        return (await self._read(prompt, secret=False)).strip()

    async def secret(self, prompt: str) -> str:
        """A secret (password, token): never echoed; only the line end is removed."""
        return await self._read(prompt, secret=True)

    def _is_tty(self) -> bool:
        try:
            return bool(self._stdin.isatty())
        except (AttributeError, ValueError):
            return False

    async def _read(self, prompt: str, *, secret: bool) -> str:
        if secret and self._is_tty():
            with _terminal_restored(self._stdin):
                return await _in_daemon_thread(lambda: getpass.getpass(prompt, stream=self._stderr))
        self._stderr.write(prompt)
        self._stderr.flush()
        line: str = await _in_daemon_thread(self._stdin.readline)
        if not line:
            self._stderr.write("\n")
            raise CliError(
                f"standard input ended before an answer to {prompt.strip().rstrip(':')!r}",
                EXIT_AUTH,
            )
        if not self._is_tty():
            self._stderr.write("\n")  # the answer came from a pipe: end the prompt line
        return line.rstrip("\r\n")


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run a blocking read in a daemon thread; cancelling abandons it (it cannot be
    interrupted, and a daemon thread does not keep the process alive)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting task
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=work, name="resilient-tg prompt", daemon=True).start()
    return await future


@contextlib.contextmanager
def _terminal_restored(stdin: Any) -> Iterator[None]:
    """getpass turns echo off; if we abandon it (Ctrl-C), turn echo back on."""
    try:
        import termios

        fd = stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
