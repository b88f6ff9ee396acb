"""ReconnectPolicy and KeepalivePolicy: immutable, validated, safe to share.

Like urllib3's ``Retry``, a policy is a value: change it with ``attrs.evolve`` (or
``policy.evolve(...)``) and every client holding the old one is unaffected.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

__all__ = ["KeepalivePolicy", "ReconnectPolicy"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value!r}")
    if math.isinf(value) or math.isnan(value):
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be finite, got {value!r}"
        )


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be >= 0, got {value!r}")
    if math.isinf(value) or math.isnan(value):
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be finite, got {value!r}"
        )


def _optional_positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be None (forever) or an int >= 1, "
            f"got {value!r}"
        )


def _optional_positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


_JITTERS = ("full", "equal", "none")


@attrs.frozen
class ReconnectPolicy:
    """How a lost link is rebuilt: exponential backoff with jitter, forever by default.

    Attempts are of two kinds. One that never reached the server (the connect was
    refused, the host unreachable, the TCP connect timed out, or the peer accepted it
    and never sent a byte) costs the server nothing: the next one follows at most
    ``probe_delay`` later (``probe_wait``, jittered over its upper half), whatever the
    backoff, and the backoff does not grow. The n-th consecutive attempt that reached
    the server and failed there (a handshake error, a close after the handshake, a 5xx,
    FLOOD_WAIT) waits ``delay(n)``: with full jitter a uniform draw from
    ``[0, min(max_delay, initial_delay * multiplier**(n-1))]``, so a fleet does not come
    back in lock-step. After a link that was up drops, the first attempt waits
    ``delay(1)`` (at most ``initial_delay``), plus what the process's scheduler adds to
    spread a herd of clients that dropped together.

    Both kinds count as attempts: ``attempt`` and ``max_attempts`` include the cheap
    ones (several a second during a refusal outage), so bound an outage in time with
    ``max_elapsed`` rather than with ``max_attempts``. ``max_attempts`` and
    ``max_elapsed`` of None mean never give up. After ``reset_after`` seconds of a
    healthy link the attempt counter starts again from 1. ``connect_timeout`` bounds
    how long an attempt (TCP connect, auth-key exchange, first answer) may go without
    hearing from the server; one that keeps hearing from it (a slow link) may take up
    to three times as long in all.

    With ``cap_by_elapsed`` (the default) the ceiling is also at most the time the
    outage has lasted so far (never below ``initial_delay``). Attempts that fail at once
    (refused connects) would otherwise climb the exponent within seconds, and a 10 s
    outage could cost a 30 s wait after it ended; capped, a client is back within about
    twice the outage, and attempts still thin out as the outage grows.
    """

    initial_delay: float = attrs.field(default=0.1, converter=_float, validator=_positive)
    max_delay: float = attrs.field(default=30.0, converter=_float, validator=_positive)
    multiplier: float = attrs.field(default=2.0, converter=_float, validator=_positive)
    jitter: str = "full"
    max_attempts: int | None = attrs.field(default=None, validator=_optional_positive_int)
    max_elapsed: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(_float), validator=_optional_positive
    )
    reset_after: float = attrs.field(default=60.0, converter=_float, validator=_non_negative)
    connect_timeout: float = attrs.field(default=10.0, converter=_float, validator=_positive)
    cap_by_elapsed: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    probe_delay: float = attrs.field(default=0.5, converter=_float, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.jitter not in _JITTERS:
            raise ValueError(
                f"ReconnectPolicy.jitter must be one of {', '.join(_JITTERS)}, got {self.jitter!r}"
            )
        if self.multiplier < 1:
            raise ValueError(
                "ReconnectPolicy.multiplier must be >= 1 (delays never shrink), "
                f"got {self.multiplier!r}"
            )
        if self.max_delay < self.initial_delay:
            raise ValueError(
                "ReconnectPolicy.max_delay must be >= initial_delay "
                f"({self.max_delay!r} < {self.initial_delay!r})"
            )

    def ceiling(self, attempt: int, elapsed: float | None = None) -> float:
        """The largest delay the ``attempt``-th consecutive failure can wait (1-based),
        ``elapsed`` seconds into the outage (None: no elapsed-time cap)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt!r}")
        # Cap the exponent: multiplier**n overflows long before it matters.
        exponent = min(attempt - 1, 1024)
        try:
            raw = self.initial_delay * self.multiplier**exponent
        except OverflowError:
            raw = math.inf
        ceiling = min(self.max_delay, raw)
        if elapsed is not None and self.cap_by_elapsed:
            ceiling = min(ceiling, max(self.initial_delay, elapsed))
        return ceiling

    def delay(
        self, attempt: int, rng: random.Random | None = None, elapsed: float | None = None
    ) -> float:
        """Seconds to wait before the ``attempt``-th try (1-based), ``elapsed`` seconds
        into the outage. Pure given ``rng``."""
        ceiling = self.ceiling(attempt, elapsed)
        draw = (rng or random).random()
        if self.jitter == "full":
            return ceiling * draw
        if self.jitter == "equal":
            return ceiling / 2 + ceiling / 2 * draw
        return ceiling

    def probe_wait(self, rng: random.Random | None = None) -> float:
        """Seconds before the next try after one that never reached the server: within
        ``[probe_delay/2, probe_delay]`` (exactly ``probe_delay`` without jitter), so a
        healed path is found within ``probe_delay``. Pure given ``rng``."""
        if self.jitter == "none":
            return self.probe_delay
        return self.probe_delay * (0.5 + 0.5 * (rng or random).random())

    def gives_up(self, attempt: int, elapsed: float) -> bool:
        """Whether the ``attempt``-th try must not be made (``elapsed`` s into the outage)."""
        if self.max_attempts is not None and attempt > self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed >= self.max_elapsed

    def evolve(self, **changes: Any) -> ReconnectPolicy:
        """A copy with some fields changed (validated again)."""
        return attrs.evolve(self, **changes)


@attrs.frozen
class KeepalivePolicy:
    """How a dead link is found: a ping every ``interval`` seconds, dead when no pong
    comes within ``timeout``. A black-holed link is noticed within interval + timeout.

    The pings are ``ping_delay_disconnect``, so the server also drops a link that lost
    us after ``interval + timeout`` (rounded up to whole seconds, at least 1).

    A stalled event loop (a blocking callback, a long computation) is not counted
    against the link: the time the loop did not run is added to the pong's timeout.
    The server does not know about our stalls, though: a stall longer than
    `disconnect_delay` may still lose the link on the server's side.
    """

    interval: float = attrs.field(default=5.0, converter=_float, validator=_positive)
    timeout: float = attrs.field(default=5.0, converter=_float, validator=_positive)

    @property
    def detection_bound(self) -> float:
        """The longest a dead link can go unnoticed."""
        return self.interval + self.timeout

    @property
    def disconnect_delay(self) -> int:
        """What we ask the server to wait for our next ping before it closes the link."""
        return max(1, math.ceil(self.interval + self.timeout))

    def evolve(self, **changes: Any) -> KeepalivePolicy:
        """A copy with some fields changed (validated again)."""
        return attrs.evolve(self, **changes)
