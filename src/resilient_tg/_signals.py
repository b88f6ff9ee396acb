"""Waiting for the signals a service manager sends to stop a process."""

from __future__ import annotations

import logging
import signal

import anyio

__all__ = ["wait_for_stop_signal"]


async def wait_for_stop_signal(log: logging.Logger, then: str) -> int:
    """Return the number of the first SIGTERM or SIGINT, logging that ``then`` follows."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; %s", signal.Signals(signum).name, then)
            return int(signum)
    return 0  # pragma: no cover - the receiver never ends on its own
