"""The keepalive: a ping_delay_disconnect every ``interval``; no pong within ``timeout``
means the link is dead, and its owner is told so that the link is rebuilt.

Entries in the process's `Scheduler`, not a task: a connected idle client costs a timer
and a ping's future, nothing more.

A black-holed (half-open) link therefore costs at most interval + timeout: the ping
that finds it is sent at most ``interval`` after the last pong, and its pong is
awaited for ``timeout``. Each link is watched on its own (`Keepalive.start` for every
link that begins to carry requests): its silence counts from that moment, never from a
pong of an earlier link, and it is pinged at once.

A stalled event loop is not a silent peer: the scheduler meters stalls while a pong is
awaited, and the pong's deadline moves by the time the loop did not run, so the ping
always gets its whole timeout of running loop. This protects our side only: the server
closes a link that sent no ping for its ping_delay_disconnect delay
(``KeepalivePolicy.disconnect_delay``, about interval + timeout), so a stall longer than
that may still lose the link on the server's side.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from telethon.tl import functions

from . import _compat
from ._policy import KeepalivePolicy
from ._scheduler import STALL, TICK, Scheduler, Timer, get_scheduler

__all__ = ["STALL", "TICK", "Keepalive"]

log = logging.getLogger("resilient_tg.keepalive")

#: Called with the round trip of each pong.
PongListener = Callable[[float], None]
#: Called when the link is found dead: seconds of silence, and whether it ever answered.
SilenceListener = Callable[[float, bool], None]
#: Asked before each ping: whether the link may still be used (the session lease is held;
#: `LeaseKeeper.check`). False: no ping, the owner is taking the link down.
Fence = Callable[[], bool]


class Keepalive:
    """Pings one client's current link. Internal; the client holds one."""

    __slots__ = (
        "_deadline",
        "_early",
        "_extended",
        "_fence",
        "_future",
        "_last_pong",
        "_link",
        "_next",
        "_on_pong",
        "_on_silent",
        "_ping",
        "_scheduler",
        "_sent",
        "_stall_mark",
        "_telegram",
        "_up_since",
        "_watching",
        "policy",
    )

    def __init__(
        self,
        policy: KeepalivePolicy,
        on_pong: PongListener,
        on_silent: SilenceListener,
        fence: Fence,
    ) -> None:
        self._scheduler: Scheduler  # the running loop's, from start() on
        self.policy = policy
        self._on_pong = on_pong
        self._on_silent = on_silent
        self._fence = fence
        self._telegram: Any = None
        self._early: Any = None  # the ping a new link carries first, until answered
        self._link = 0  # bumped for every link: callbacks of an older one are ignored
        self._next: Timer | None = None
        self._deadline: Timer | None = None
        self._ping: Any = None
        self._future: Any = None
        self._sent = 0.0
        self._up_since = 0.0
        self._last_pong: float | None = None
        self._stall_mark = 0.0
        self._extended = 0.0
        self._watching = False

    def cover(self, telegram: Any) -> None:
        """A link is up and nothing has gone out on it yet: make its first message a
        ping_delay_disconnect, so that the server closes it after ``disconnect_delay``
        of silence from its very first request. Otherwise a process paused (or cut off)
        before the link's first regular ping (sent once connect() finished) would hold
        it open on the server for as long as it is paused, while another process takes
        the session over once the lease expires: two links with one key."""
        if self._early is not None:
            _compat.withdraw(telegram, self._early)  # a dead link's: never resent
        ping = functions.PingDelayDisconnectRequest(
            ping_id=secrets.randbits(63), disconnect_delay=self.policy.disconnect_delay
        )
        self._early = ping
        future = _compat.send_first(telegram, ping)
        future.add_done_callback(lambda done: self._early_done(ping, done))

    def _early_done(self, ping: Any, future: Any) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: a link that died before the pong is no news
        if self._early is ping:
            self._early = None

    def start(self, telegram: Any) -> None:
        """A link begins to carry requests: ping it now, then every ``interval``."""
        self.stop()
        self._telegram = telegram
        self._scheduler = scheduler = get_scheduler()
        self._up_since = scheduler.time()
        self._last_pong = None
        self._send(self._link)

    def stop(self) -> None:
        """The link is down (or the client leaves): no more pings for it."""
        self._link += 1
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._end_ping()

    def _end_ping(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._watching:
            self._watching = False
            self._scheduler.unwatch_stalls()
        if self._ping is not None and self._future is not None and not self._future.done():
            # Taken back from the sender first: a late pong then finds nothing to complete.
            _compat.withdraw(self._telegram, self._ping)
        self._ping = None
        self._future = None

    def _send(self, link: int) -> None:
        if link != self._link:
            return
        self._next = None
        if not self._fence():
            # The lease is gone (maybe found so just now, after a pause): the owner drops
            # the link, and pings the next one when it carries requests (start()).
            return
        ping = functions.PingDelayDisconnectRequest(
            ping_id=secrets.randbits(63), disconnect_delay=self.policy.disconnect_delay
        )
        try:
            future = _compat.send_nowait(self._telegram, ping)
        except ConnectionError:  # the sender is disconnecting: stop() follows
            return
        scheduler = self._scheduler
        self._ping = ping
        self._future = future
        self._sent = scheduler.time()
        self._stall_mark = scheduler.stalled
        self._extended = 0.0
        self._watching = True
        scheduler.watch_stalls()
        self._deadline = scheduler.call_later(self.policy.timeout, self._check, link)
        future.add_done_callback(lambda done: self._answer(link, done))

    def _answer(self, link: int, future: Any) -> None:
        failed = future.cancelled() or future.exception() is not None
        if link != self._link or future is not self._future:
            return
        now = self._scheduler.time()
        sent = self._sent
        self._ping = None  # answered: nothing to withdraw
        self._end_ping()
        if failed:
            # The link changed under the ping (or the server refused it): start over soon.
            log.debug("keepalive ping failed: %r", not future.cancelled() and future.exception())
            self._next = self._scheduler.call_later(
                min(self.policy.interval, 0.1), self._send, link
            )
            return
        self._last_pong = now
        self._on_pong(now - sent)
        self._next = self._scheduler.call_at(sent + self.policy.interval, self._send, link)

    def _check(self, link: int) -> None:
        """The pong's deadline: dead unless the loop itself stalled meanwhile."""
        if link != self._link:
            return
        self._deadline = None
        stalled = self._scheduler.stalled - self._stall_mark
        if stalled > self._extended:
            log.info(
                "event loop stalled for %.1fs while a keepalive ping was out; "
                "its timeout is extended by that much",
                stalled - self._extended,
            )
            self._deadline = self._scheduler.call_later(stalled - self._extended, self._check, link)
            self._extended = stalled
            return
        now = self._scheduler.time()
        last = self._last_pong
        self.stop()
        self._on_silent(now - (last if last is not None else self._up_since), last is not None)
