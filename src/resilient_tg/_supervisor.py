"""The link supervisor: what drives one client's link.

The ``connection=`` class from `._connection` reports to it (it is the LinkObserver):
before each attempt (wait out the policy's delay, spread a herd, give up when the policy
says so), on a failed attempt, when a link comes up (start the post-connect: probe,
catch up, CONNECTED) and when it goes down (schedule the next attempt). It runs
Telethon's ``connect()`` .. ``disconnected`` cycles and tells what ended each: a task
while connecting, a callback on Telethon's disconnected future while the link is up (no
task of ours then). It owns Telethon's DC switch (`switch_dc`): the link to the new DC
is one of its reconnects. The bookkeeping and the retry and final-state decisions are
`._link.Link`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from telethon import errors

from . import _compat
from ._connection import (
    CONNECT_FAILURES,
    LinkAborted,
    current_observer,
    explain_failure,
)
from ._fatal import app_rejected
from ._kinds import FLOOD, KEY_DEAD, address, classify, describe, error_name
from ._postconnect import run_post_connect
from ._scheduler import get_scheduler
from ._state import ConnectionState, StateReason

if TYPE_CHECKING:
    from ._core import Telegram

from ._link import CHEAP, COSTLY, LOST, Link

__all__ = ["CHEAP", "COSTLY", "LOST", "LinkSupervisor"]

log = logging.getLogger("resilient_tg.client")


class _CycleAbandoned(Exception):
    """Raised inside our own ``telegram.connect()`` when the lease was lost since the
    connect cycle began: Telethon does not retry it (not an OSError), `_connect` ends the
    cycle, and the next one waits for the lease. (The lease recovery's ``disconnect()``
    cancels Telethon's reconnect task, but not a connect() our task is running.)"""


def _our_cancellation() -> bool:
    """Whether the running task was cancelled by someone (not a future Telethon cancelled
    under it); always True where Python cannot tell (3.10)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


class LinkSupervisor(Link):
    """Keeps one client's link: the LinkObserver its connections report to, and the
    connect-cycle task. Internal; the client holds one as ``_link``."""

    __slots__ = ()

    # LinkObserver: called by the connection class ------------------------------------

    def owns(self, conn: Any) -> bool:
        """Whether ``conn`` is the main sender's link (not an exported sender's)."""
        telegram = self._client._telegram
        return telegram is not None and _compat.main_connection(telegram) is conn

    def _lease_gone(self) -> bool:
        """Whether the lease was lost since this connect cycle began (even if it is held
        again): its attempts must not touch a link. `LeaseKeeper.check`, not ``lost``:
        after a pause the lease may be past its expiry before its timer ran."""
        leases = self._client._leases
        return not leases.check() or leases.losses != self.cycle_losses

    async def _abandon(self) -> None:
        """Leave this attempt after a lease loss; never returns. Our own connect cycle
        ends (see `_CycleAbandoned`); Telethon's reconnect task waits here until the lease
        recovery's ``disconnect()`` cancels it."""
        if asyncio.current_task() is self.connecting:
            raise _CycleAbandoned
        await asyncio.Event().wait()

    async def before_attempt(self, conn: Any) -> None:
        client = self._client
        while True:
            if client._closing or self.gave_up or client._state.terminal:
                await asyncio.Event().wait()  # cancelled by disconnect()
            if self._lease_gone():
                await self._abandon()
            if self.first_attempt:
                self.first_attempt = False
                self.attempt = 0
                scheduler = get_scheduler()
                await scheduler.admit(self)
                client._transition(
                    ConnectionState.CONNECTING,
                    StateReason.START,
                    f"connecting to {address(conn)}",
                    message=f"connecting to {address(conn)}",
                )
                break
            if self.next_attempt_at is None:  # a loss we did not see (defensive)
                self.schedule_retry(StateReason.TRANSPORT_ERROR, None, "link lost")
            assert self.next_attempt_at is not None
            scheduler = get_scheduler()
            await scheduler.sleep(self.next_attempt_at - time.monotonic())
            # Spread a herd: clients of this process that lost their links together.
            await scheduler.admit(self)
            if client._closing or self._lease_gone():
                continue
            elapsed = time.monotonic() - (self.outage_started or time.monotonic())
            if client.reconnect_policy.gives_up(self.attempt, elapsed):
                self._give_up(elapsed)
                continue
            self.next_attempt_at = None
            change_detail = f"reconnecting to {address(conn)} (attempt {self.attempt})"
            if self.switch_target is not None:
                change_detail = (
                    f"connecting to DC {self.switch_target} at {address(conn)} "
                    f"(attempt {self.attempt})"
                )
            client._transition(
                ConnectionState.CONNECTING,
                StateReason.START,
                change_detail,
                message=change_detail,
                level=logging.DEBUG if self.quiet else logging.INFO,
            )
            client._callbacks.emit("reconnecting", self._last_change())
            with anyio.move_on_after(client.reconnect_policy.connect_timeout):
                await client._callbacks.drain()
            break
        if self._lease_gone():  # lost while waiting for our place or the callbacks
            await self._abandon()
        self.attempt_started = time.monotonic()
        self.conn = conn

    def attempt_failed(self, conn: Any, error: BaseException) -> None:
        # The TCP connect itself failed (refused, unreachable, timed out): the server
        # never saw it.
        reason = classify(error)
        self.schedule_retry(reason, error, f"connect failed: {describe(error)}", kind=CHEAP)

    def transport_up(self, conn: Any) -> None:
        client = self._client
        if self._lease_gone():
            # The TCP connect ended after the lease was lost (e.g. across a SIGSTOP past
            # it): close the link before one byte goes out with the key. Raised into the
            # connect: ours ends its cycle; Telethon's reconnect task takes the OSError
            # as a failed attempt and waits in before_attempt until the recovery ends it.
            aborted = LinkAborted(StateReason.LEASE, "the session lease was lost", quiet=True)
            conn.abort(aborted)
            self.conn = None  # not a link of ours: its end reports nothing
            if asyncio.current_task() is self.connecting:
                raise _CycleAbandoned
            raise aborted
        if client._telegram is not None:
            _compat.start_link(client._telegram, conn)  # nothing stale goes out on it
            client._keepalive.cover(client._telegram)  # the server's timer from the start
        self.conn = conn
        self.up = True
        generation = client._generation
        if self.post_connect is not None:
            self.post_connect.cancel()
        task = client._tasks.spawn(
            "post-connect",
            client._guarded,
            "post-connect",
            run_post_connect,
            self,
            client,
            conn,
            generation,
        )
        self.post_connect = task
        if task is not None:
            task.add_done_callback(self._post_connect_done)

    def transport_down(self, conn: Any, error: BaseException | None) -> None:
        if conn is not self.conn:
            return
        client = self._client
        self.up = False
        client._generation += 1
        self.carry(False)
        if self.post_connect is not None:
            self.post_connect.cancel()
            self.post_connect = None
        if client._closing or client._state.terminal or client._leases.lost or self.switching:
            return  # (a DC switch has scheduled the link to the new DC already)
        now = time.monotonic()
        if self.connected_since is not None and now - self.connected_since >= (
            client.reconnect_policy.reset_after
        ):
            self.attempt = 0
            self.outage_started = None
        self.connected_since = None
        reason = classify(error) if error is not None else StateReason.EOF
        if isinstance(error, LinkAborted):
            lived = error.detail
        else:
            lived = describe(error) if error is not None else "closed by the server"
        if client._state.link_up:
            self.schedule_retry(reason, error, f"link lost: {lived}", kind=LOST)
        else:
            # The link of a connect attempt, which never got up (e.g. a TCP connect
            # accepted into a black hole): a failed attempt, not a lost link. Cheap if
            # the peer never sent a byte: nothing says it reached the server.
            attempt = f"connect attempt {self.attempt}" if self.attempt else "connect attempt"
            heard = bool(getattr(conn, "_rtg_head", b""))
            self.schedule_retry(
                reason, error, f"{attempt}: {lived}", kind=COSTLY if heard else CHEAP
            )

    # Connect cycles ----------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self._client._closing or self._client._state.terminal

    def start(self) -> None:
        """Begin connecting (the client is entered and holds the lease)."""
        self._client._spawn("connect", self._connect_cycles)

    async def _connect_cycles(self) -> None:
        """Connect until a link is up (then this task ends: a connected client owns no
        task of ours; `_disconnected` starts the next cycle), or until told to stop."""
        client = self._client
        telegram = client._telegram
        assert telegram is not None
        # The connection Telethon builds inside connect() (in this task) reports to us.
        current_observer.set(self)
        while not self._stopping():
            await client._leases.held.wait()
            if self._stopping():
                return
            self.cycle_losses = client._leases.losses
            self.sender_ready.clear()
            self.carry(False)
            self.switching = False  # a switch's old link is closed by now: links report again
            outcome = await self._connect(telegram)
            if outcome == "up":
                _compat.stop_telethon_keepalive(telegram)  # ours pings; see _compat
                telegram.disconnected.add_done_callback(self._disconnected)
                return
            if outcome == "stop":
                return

    def _disconnected(self, ended: asyncio.Future[Any]) -> None:
        """Telethon's sender fully disconnected: decide what next in a task of its own."""
        if not ended.cancelled():
            ended.exception()  # retrieved here; read again by _after_disconnect
        self._client._spawn("connect", self._after_disconnect, ended)

    async def _after_disconnect(self, ended: asyncio.Future[Any]) -> None:
        telegram = self._client._telegram
        assert telegram is not None
        if await self._ended(telegram, ended) == "again":
            await self._connect_cycles()

    async def _connect(self, telegram: Telegram) -> str:
        """telegram.connect(): "up", "again" or "stop"."""
        client = self._client
        self.connecting = asyncio.current_task()  # our connect(), not Telethon's reconnect
        if _compat.clear_stale_reconnect(telegram):
            log.debug("cleared Telethon's reconnect flag left by a cancelled reconnect")
        try:
            await telegram.connect()
        except _CycleAbandoned:
            return "stop" if self._stopping() else "again"
        except asyncio.CancelledError:
            if _our_cancellation():
                raise
            # Telethon cancelled connect()'s own request: the link was dropped under it
            # (a DC switch, a lease loss). Not a cancellation of this task.
            return "stop" if self._stopping() else "again"
        except errors.AuthKeyNotFound as exc:
            return "again" if await self._key_unknown(exc) else "stop"
        except (ConnectionError, OSError) as exc:
            if client._leases.lost:
                return "again"
            if self._stopping():
                return "stop"
            log.warning("connect ended with %s; starting over", describe(exc))
            return "again"
        except errors.RPCError as exc:
            return await self._connect_answered(telegram, exc)
        except CONNECT_FAILURES as exc:  # the peer's bytes are not MTProto, or it hung up
            return await self._connect_failed(telegram, explain_failure(self.conn, exc))
        finally:
            self.connecting = None
        self.sender_ready.set()
        return "up"

    async def _ended(self, telegram: Telegram, ended: asyncio.Future[Any]) -> str:
        """What ended a connect cycle (Telethon's disconnected future): "again" or "stop"."""
        client = self._client
        try:
            if not ended.cancelled():
                ended.result()
        except errors.AuthKeyNotFound as exc:
            return "again" if await self._key_unknown(exc) else "stop"
        except Exception as exc:  # noqa: BLE001 - Telethon gave the link up; we do not
            if self._stopping():
                return "stop"
            log.warning("Telethon dropped the link (%s); reconnecting", describe(exc))
            # Not telegram.disconnect(): that also cancels the event handlers still
            # running (an update half handled would be lost) and closes the session.
            await _compat.drop_main_link(telegram)
            self.schedule_retry(classify(exc), exc, f"link dropped: {describe(exc)}")
            return "again"
        if self._stopping():
            return "stop"
        if client._leases.lost:
            return "again"
        if self.switching:
            self.switching = False
            return "again"  # the old DC's link is closed; dial the new one
        failure = _compat.updates_error(telegram)
        if failure is not None and isinstance(
            failure, (errors.UnauthorizedError, errors.AuthKeyError, *KEY_DEAD)
        ):
            self.auth_lost(error_name(failure), failure)
            return "stop"
        # Someone called client.telegram.disconnect() (or log_out()): respect it.
        client._transition(
            ConnectionState.CLOSED, StateReason.USER, "disconnected by the application"
        )
        return "stop"

    async def _connect_answered(self, telegram: Telegram, exc: errors.RPCError) -> str:
        """initConnection was answered with an error: final if it refuses the app or the
        key, else retried like any failed attempt (a 500, a FLOOD_WAIT...)."""
        name = app_rejected(exc)
        if name is not None:
            self.rejected(name, exc)
            return "stop"
        if isinstance(exc, KEY_DEAD):
            self.auth_lost(error_name(exc), exc)
            return "stop"
        outcome = await self._connect_failed(telegram, exc)
        if isinstance(exc, FLOOD) and self.next_attempt_at is not None:
            self.next_attempt_at = max(
                self.next_attempt_at, time.monotonic() + max(1, int(exc.seconds))
            )
        return outcome

    async def _connect_failed(self, telegram: Telegram, error: BaseException) -> str:
        """connect() failed with the link up (Telethon leaves it open): drop the link and
        retry, paced by the policy like any transport error."""
        if self._stopping():
            return "stop"
        if self._client._leases.lost:
            return "again"
        conn = self.conn
        if conn is not None and hasattr(conn, "note_failure"):
            conn.note_failure(error)  # transport_down reports it
        await _compat.drop_link(telegram)
        if self.next_attempt_at is None and not self._stopping():
            self.schedule_retry(classify(error), error, f"connect failed: {describe(error)}")
        return "again"

    # The DC switch ------------------------------------------------------------------------

    async def switch_dc(self, new_dc: int) -> None:
        """Telethon's ``_switch_dc`` (see `_compat.TelethonHooks`): the server moved a session
        that is not logged in to ``new_dc`` (*_MIGRATE_X at login). Point the session at
        it, drop the key (a key is known on the DC that made it only), close the old
        link, and let the connect cycle dial the new DC like any reconnect: our
        connection class, the policy, the probe and CONNECTED on the new DC. The request
        gate resends the request that was answered with the migration there.

        A logged-in session is never moved: its key lives on its DC and dropping it would
        end the login; the caller then gets the server's *_MIGRATE error."""
        client = self._client
        telegram = client._telegram
        session = client._session
        if telegram is None or session is None or self._stopping() or client._leases.lost:
            return
        if session.dc_id == new_dc:
            return  # already there (another request's migration got there first)
        known = client._health
        if known.authorized or (known.authorized is None and known.was_authorized):
            log.warning(
                "the server asks to move the logged-in session to DC %d; not moving it "
                "(its key is known on DC %s only)",
                new_dc,
                session.dc_id,
            )
            return
        # connect() must be over before its link is dropped: its own requests are in flight.
        with anyio.move_on_after(client.reconnect_policy.connect_timeout):
            await self.sender_ready.wait()
        host, port = await _compat.dc_address(telegram, new_dc)
        if session.dc_id == new_dc or self._stopping() or client._leases.lost:
            return
        old = session.dc_id
        self.switches += 1
        self.switching = True
        self.switch_target = new_dc
        session.set_dc(new_dc, host, port)
        _compat.forget_auth_key(telegram)
        now = time.monotonic()
        self.outage_started = self.outage_started or now
        self.attempt = 1
        self.next_attempt_at = now  # the new DC is dialled at once
        client._transition(
            ConnectionState.RECONNECTING,
            StateReason.DC_MIGRATE,
            f"the server moved the session from DC {old} to DC {new_dc} ({host}:{port})",
            next_delay=0.0,
            message=(
                f"the server moved the session from DC {old} to DC {new_dc}; "
                f"connecting to {host}:{port}"
            ),
        )
        try:
            await _compat.drop_main_link(telegram)
        except BaseException:
            self.switching = False
            raise

    async def _key_unknown(self, exc: BaseException) -> bool:
        """Transport -404. True to carry on (a never-used key is replaced), False to stop."""
        client = self._client
        if client._health.was_authorized:
            self.auth_lost("the server no longer knows the auth key (-404)", exc)
            return False
        log.info("the server does not know our (never authorized) auth key; creating a new one")
        assert client._session is not None
        telegram = client._telegram
        assert telegram is not None
        # Telethon also puts the -404 into its disconnected future (now or in a moment):
        # take it, so that it is not reported as an exception never retrieved.
        telegram.disconnected.add_done_callback(
            lambda ended: ended.cancelled() or ended.exception()
        )
        await telegram.disconnect()
        _compat.forget_auth_key(telegram)
        self.first_attempt = True
        return True
