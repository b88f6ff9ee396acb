"""The link's bookkeeping and what ends an attempt: retries paced by the ReconnectPolicy
(by attempt kind: a lost link, an attempt that never reached the server, one that failed
there), giving up, and the final states AUTH_LOST and REJECTED.

`Link` holds the state one client's link keeps across attempts; `LinkSupervisor`
(`._supervisor`) extends it with what drives the link: the LinkObserver the connection
class reports to, and the connect cycles. The client reads `attempt` and `up`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from . import _compat
from ._connection import LinkAborted
from ._flag import Flag
from ._state import ConnectionState, StateChange, StateReason

if TYPE_CHECKING:
    from ._core import ClientCore

__all__ = ["CHEAP", "COSTLY", "LOST", "Link"]

#: Attempt kinds (see `Link.schedule_retry`).
LOST = "lost"
CHEAP = "cheap"
COSTLY = "costly"

log = logging.getLogger("resilient_tg.client")


class Link:
    """One client's link: its attempt counters and timers, and the decisions that end an
    attempt (retry, give up, AUTH_LOST, REJECTED). Internal."""

    __slots__ = (
        "_client",
        "attempt",
        "attempt_started",
        "cheap",
        "conn",
        "connected_since",
        "connecting",
        "cycle_losses",
        "failures",
        "first_attempt",
        "gave_up",
        "next_attempt_at",
        "outage_started",
        "post_connect",
        "quiet",
        "sender_ready",
        "switch_target",
        "switches",
        "switching",
        "up",
    )

    def __init__(self, client: ClientCore) -> None:
        self._client = client
        self.conn: Any = None  # the connection of the current (or last) link
        self.up = False  # the current link's transport is up
        self.attempt = 0  # attempts in this outage, cheap ones included
        self.failures = 0  # consecutive attempts that reached the server and failed there
        self.cheap = 0  # attempts in this outage that never reached the server
        self.quiet = False  # the next attempt follows a cheap one: its line is DEBUG
        self.attempt_started: float | None = None
        self.next_attempt_at: float | None = None
        self.outage_started: float | None = None
        self.connected_since: float | None = None
        self.first_attempt = True
        # The task running our own telegram.connect() (None outside it), and how many
        # lease losses there were when this connect cycle began (see LinkSupervisor).
        self.connecting: asyncio.Task[Any] | None = None
        self.cycle_losses = 0
        # Set when telegram.connect() has returned in this connect cycle.
        self.sender_ready = Flag()
        self.post_connect: asyncio.Task[None] | None = None
        self.gave_up = False
        # DC switches (see switch_dc): how many so far, whether the old link is being
        # dropped for one, and the DC being dialled until the link to it is CONNECTED.
        self.switches = 0
        self.switching = False
        self.switch_target: int | None = None

    def carry(self, on: bool) -> None:
        """The current link carries requests (``on``) or no longer does: the request gate
        sends on it, and the keepalive watches it."""
        client = self._client
        if on:
            client._carrying.set()
            client._keepalive.start(client._telegram)
        else:
            client._carrying.clear()
            client._keepalive.stop()

    def silent(self, silence: float, answered: bool) -> None:
        """The keepalive found the link silent: abort it, saying what was silent (a link
        that answered before, or an attempt that never got an answer)."""
        if answered or self._client._state.link_up:
            self.abort(StateReason.KEEPALIVE_TIMEOUT, f"keepalive timeout after {silence:.1f}s")
        else:
            self.abort(StateReason.CONNECT_TIMEOUT, f"no answer within {silence:.1f}s")

    # Retries ------------------------------------------------------------------------

    def schedule_retry(
        self,
        reason: StateReason,
        error: BaseException | None,
        what: str,
        *,
        kind: str = COSTLY,
    ) -> None:
        """RECONNECTING: the next attempt after the policy's delay for an attempt of
        ``kind``: LOST (a link that was up dropped), CHEAP (the attempt never reached
        the server) or COSTLY (it reached the server and failed there)."""
        client = self._client
        if client._closing or client._state.terminal:
            return
        policy = client.reconnect_policy
        now = time.monotonic()
        if self.outage_started is None:
            self.outage_started = now
        elapsed = now - self.outage_started
        self.attempt += 1
        level = logging.INFO
        count = ""
        if kind == LOST:
            self.failures = 0
            self.cheap = 0
            delay = policy.delay(1, client._rng, elapsed)
        elif kind == CHEAP:
            self.cheap += 1
            delay = policy.probe_wait(client._rng)
            if policy.cap_by_elapsed:  # never longer than the outage so far, as any delay
                delay = min(delay, max(policy.initial_delay, elapsed))
            if self.cheap & (self.cheap - 1):
                level = logging.DEBUG  # INFO at 1, 2, 4, 8... with the count
            else:
                count = f" ({self.cheap} in this outage did not reach the server)"
        else:
            self.failures += 1
            delay = policy.delay(self.failures, client._rng, elapsed)
        self.next_attempt_at = now + delay
        self.quiet = kind == CHEAP  # its failure line (rate-limited) says it all
        client._transition(
            ConnectionState.RECONNECTING,
            reason,
            what,
            error=error,
            next_delay=delay,
            message=f"{what}{count}; reconnecting in {delay:.1f}s (attempt {self.attempt})",
            level=level,
        )

    def _give_up(self, elapsed: float) -> None:
        client = self._client
        self.gave_up = True
        policy = client.reconnect_policy
        limit = (
            f"max_attempts={policy.max_attempts}"
            if policy.max_attempts is not None and self.attempt > policy.max_attempts
            else f"max_elapsed={policy.max_elapsed}s"
        )
        client._transition(
            ConnectionState.GAVE_UP,
            StateReason.GAVE_UP,
            f"gave up after {self.attempt - 1} attempts in {elapsed:.1f}s ({limit})",
        )
        client._spawn("give-up", self.disconnect_telegram)

    def _last_change(self) -> StateChange:
        client = self._client
        return StateChange(
            old=client._state,
            new=client._state,
            reason=client._reason or StateReason.START,
            detail=client._detail,
            attempt=self.attempt,
        )

    def abort(self, reason: StateReason, detail: str, *, quiet: bool = False) -> None:
        """Close the current socket; Telethon then reconnects (paced by the policy)."""
        conn = self.conn
        if conn is not None and self.up:
            conn.abort(LinkAborted(reason, detail, quiet=quiet))

    def _post_connect_done(self, task: asyncio.Task[None]) -> None:
        if self.post_connect is task:
            self.post_connect = None  # a finished task keeps its frame's results alive

    # Final states ----------------------------------------------------------------------

    def auth_lost(self, why: str, error: BaseException | None) -> None:
        """AUTH_LOST: the server no longer accepts the key; the store is left as it was."""
        client = self._client
        if client._state is ConnectionState.AUTH_LOST or client._closing:
            return
        client._health.authorized = False
        if client._session is not None:
            client._session.discard_changes()
        client._transition(
            ConnectionState.AUTH_LOST,
            StateReason.AUTH_ERROR,
            why,
            error=error,
            message=f"auth lost: {why}; not retrying, the store is left as it was",
        )
        client._spawn("auth-lost", self.disconnect_telegram)

    def rejected(self, name: str, error: BaseException) -> None:
        """The server refuses the app (API_ID_INVALID...): final, the store is left as it was."""
        client = self._client
        if client._state.terminal or client._closing:
            return
        if client._session is not None:
            client._session.discard_changes()
        client._health.rejected_reason = name
        client._transition(
            ConnectionState.REJECTED,
            StateReason.APP_REJECTED,
            f"{name}: the server refuses this api_id/api_hash",
            error=error,
            message=(
                f"rejected: the server refuses this api_id/api_hash ({name}); not retrying, "
                "fix the configuration; the store is left as it was"
            ),
        )
        client._spawn("rejected", self.disconnect_telegram)

    async def disconnect_telegram(self) -> None:
        telegram = self._client._telegram
        if telegram is not None:
            await telegram.disconnect()
            _compat.end_queued(telegram)  # their callers hear it now, not at a deadline
