"""The lease keeper: takes the session's lease, renews it, and gives it up in time.

Two processes must never use one auth key together. The lease is renewed every
``ttl/3``; a timer drops it ``margin = ttl/6`` before it expires, whatever the renewal
is doing (a renewal that hangs on a partitioned database is cancelled), so the link is
closed strictly before another holder can take the lease. The keeper does no link work
itself: it reports to its owner through two callbacks, ``on_waiting(holder)`` (another
live holder has the lease) and ``on_lost(why)`` (drop the link now; called inside the
event loop's timer, the renewal or `LeaseKeeper.check`, must not block).

The timer alone is not enough: after a pause (SIGSTOP, a VM or laptop suspend, a loop
blocked past the lease) the loop may run socket callbacks, other timers and tasks before
the overdue timer, and under a suspend the loop's monotonic clock stood still, so the
timer is not even due. So every step about to use the link (a connect attempt, a link
that came up, a keepalive ping, a request handed to Telethon) first calls `check`,
which reads the wall clock that ``expires_at`` is on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import anyio

from ._errors import LeaseLostError, SessionInUseError
from ._flag import Flag
from ._state import LeaseInfo
from .stores import SessionStore
from .stores._base import Lease

__all__ = ["LeaseKeeper"]

log = logging.getLogger("resilient_tg.client")


class LeaseKeeper:
    """Holds one session's lease for ``holder``; see the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        holder: str,
        ttl: float,
        *,
        on_waiting: Callable[[str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self._store = store
        self._holder = holder
        self._ttl = ttl
        self._on_waiting = on_waiting
        self._on_lost = on_lost
        #: Dropped this long before expiry: a renewal may hang for ttl/3, the next one
        #: is due then, and the holder that takes over only can once the lease expired.
        self.margin = ttl / 6
        self.lease: Lease | None = None
        #: Wall-clock time at which the lease is dropped (``expires_at - margin``; inf
        #: while none is held): what `check` compares with.
        self._drop_at = math.inf
        #: Another holder's lease, while we wait for it.
        self.foreign: LeaseInfo | None = None
        #: Set while we hold the lease; a new Flag after each loss (waiters wait anew).
        self.held = Flag()
        #: True from a loss until the lease is taken again.
        self.lost = False
        #: Losses so far: a step begun under one count must not touch a link under another.
        self.losses = 0
        self._timer: asyncio.TimerHandle | None = None
        self._renewing: anyio.CancelScope | None = None
        self._closed = False

    async def acquire(self, *, retry_failures: bool = False, announce: bool = True) -> None:
        """Take the lease, waiting while another live holder has it. A store failure is
        raised, or with ``retry_failures`` logged and retried (each try then bounded by
        ttl/3, so a hanging store is retried too). Without ``announce`` the lease is held
        but `lost` stays true until the owner, ready for the link again, calls `resume`."""
        poll = min(0.5, self._ttl / 3)
        while not self._stopped():
            try:
                if retry_failures:
                    with anyio.fail_after(self._ttl / 3):
                        lease = await self._store.acquire_lease(self._holder, self._ttl)
                else:
                    lease = await self._store.acquire_lease(self._holder, self._ttl)
            except SessionInUseError as exc:
                self.foreign = LeaseInfo(
                    holder=exc.holder, expires_at=exc.expires_at or 0.0, ours=False
                )
                self._on_waiting(exc.holder)
                await asyncio.sleep(poll)
                continue
            except Exception as exc:
                if not retry_failures:
                    raise
                log.warning("could not take the session lease: %s", _describe(exc))
                await asyncio.sleep(poll)
                continue
            self.foreign = None
            if self._stopped():  # released meanwhile (shutdown): give this one back too
                await self._store.release_lease(self._holder)
                return
            self.lease = lease
            self._arm()
            if announce:
                self.resume()
            return

    async def renew(self) -> None:
        """Extend the lease (bounded by ttl/3); a lost lease is dropped at once, a store
        failure is logged and left to the timer."""
        if self.lease is None or self.lost:
            return
        lease: Lease | None = None
        try:
            with anyio.CancelScope() as scope:  # cancelled by drop(): the timer wins
                self._renewing = scope
                try:
                    with anyio.fail_after(self._ttl / 3):
                        lease = await self._store.renew_lease(self._holder, self._ttl)
                finally:
                    self._renewing = None
        except LeaseLostError as exc:
            self.drop(_describe(exc))
            return
        except Exception as exc:  # noqa: BLE001 - store outage: the timer decides
            log.warning("could not renew the session lease: %s", _describe(exc))
            return
        if lease is None or self.lost or self._closed:
            return  # dropped by the timer meanwhile: the late answer changes nothing
        self.lease = lease
        self._arm()

    def check(self) -> bool:
        """Whether the link may be used now: False once the lease is lost. A held lease
        past ``expires_at - margin`` by the wall clock is dropped here and now (as by the
        expiry timer, which may run late after a pause). One time.time() and a compare:
        it guards every ping, request and connect attempt."""
        if time.time() >= self._drop_at:
            self._drop_expired()  # cancels the overdue timer too
        return not self.lost

    def resume(self) -> None:
        """The lease is held again and the owner is ready: the link may come back."""
        if self.lease is None:
            return
        self.lost = False
        self.held.set()

    def drop(self, why: str) -> None:
        """The lease is gone (or about to be): forget it, and tell the owner unless it is
        recovering from a loss already (then it sees ``lease`` is None and takes it again)."""
        if self._closed:
            return
        self.lease = None
        self._disarm()
        if self._renewing is not None:
            self._renewing.cancel()
        if self.lost:
            return
        self.lost = True
        self.losses += 1
        self.held = Flag()
        self._on_lost(why)

    async def release(self) -> None:
        """Give the lease up for good (on shutdown); a failure is logged, the lease then
        expires. No acquisition succeeds after this."""
        self._closed = True
        self._disarm()
        if self.lease is None:
            return
        self.lease = None
        try:
            await self._store.release_lease(self._holder)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("could not release the lease: %s", _describe(exc))

    def _stopped(self) -> bool:
        """Released or closed: the owner is shutting down."""
        return self._closed

    def close(self) -> None:
        """No more timers or acquisitions (the owner is shutting down)."""
        self._closed = True
        self._disarm()

    def _arm(self) -> None:
        """(Re)start the timer that drops the lease ``margin`` before it expires."""
        self._disarm()
        assert self.lease is not None
        # expires_at is wall-clock (the store's); the timer runs on the loop's clock, so
        # `check` compares the wall clock too.
        self._drop_at = self.lease.expires_at - self.margin
        delay = self._drop_at - time.time()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._expire)

    def _disarm(self) -> None:
        self._drop_at = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        """The expiry timer's callback (it ran: nothing left to cancel)."""
        self._timer = None
        self._drop_expired()

    def _drop_expired(self) -> None:
        self.drop(
            f"not renewed in time; given up {self.margin:.1f}s before it expires, "
            "so that no other holder overlaps"
        )


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
