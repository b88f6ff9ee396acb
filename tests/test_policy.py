"""ReconnectPolicy and KeepalivePolicy: validated values and a pure delay function."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_tg import KeepalivePolicy, ReconnectPolicy

policies = st.builds(
    ReconnectPolicy,
    initial_delay=st.floats(min_value=0.001, max_value=10),
    max_delay=st.floats(min_value=10, max_value=600),
    multiplier=st.floats(min_value=1, max_value=10),
    jitter=st.sampled_from(["full", "equal", "none"]),
    probe_delay=st.floats(min_value=0.001, max_value=5),
)


def test_defaults_match_the_design() -> None:
    policy = ReconnectPolicy()
    assert (policy.initial_delay, policy.max_delay, policy.multiplier, policy.jitter) == (
        0.1,
        30.0,
        2.0,
        "full",
    )
    assert policy.max_attempts is None
    assert policy.max_elapsed is None
    assert (policy.reset_after, policy.connect_timeout, policy.probe_delay) == (60.0, 10.0, 0.5)
    keepalive = KeepalivePolicy()
    assert (keepalive.interval, keepalive.timeout, keepalive.detection_bound) == (5.0, 5.0, 10.0)


@given(policies, st.integers(min_value=1, max_value=10_000), st.integers())
def test_delay_stays_within_zero_and_the_capped_ceiling(
    policy: ReconnectPolicy, attempt: int, seed: int
) -> None:
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= policy.ceiling(attempt) <= policy.max_delay


@given(policies, st.integers(min_value=1, max_value=500))
def test_ceiling_never_shrinks_as_attempts_grow(policy: ReconnectPolicy, attempt: int) -> None:
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)
    assert policy.ceiling(1) == pytest.approx(min(policy.initial_delay, policy.max_delay))


@given(policies, st.integers(min_value=1, max_value=100), st.integers())
def test_delay_is_a_pure_function_of_attempt_and_seed(
    policy: ReconnectPolicy, attempt: int, seed: int
) -> None:
    assert policy.delay(attempt, random.Random(seed)) == policy.delay(attempt, random.Random(seed))


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=1.0)
    rng = random.Random(7)
    draws = [policy.delay(1, rng) for _ in range(2000)]
    # Uniform on [0, 1]: every tenth of the range gets some, none gets most.
    buckets = [0] * 10
    for d in draws:
        buckets[min(9, int(d * 10))] += 1
    assert min(buckets) > 100
    assert max(buckets) < 300


def test_no_jitter_is_plain_exponential_backoff() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=8.0, jitter="none")
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = ReconnectPolicy(multiplier=10.0)
    assert policy.ceiling(10**9) == policy.max_delay


def test_gives_up_only_when_a_limit_is_set() -> None:
    forever = ReconnectPolicy()
    assert not forever.gives_up(10**6, 10**9)
    limited = ReconnectPolicy(max_attempts=3, max_elapsed=60)
    assert not limited.gives_up(3, 1)
    assert limited.gives_up(4, 1)
    assert limited.gives_up(1, 60)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("initial_delay", 0, "ReconnectPolicy.initial_delay must be > 0"),
        ("max_delay", -1, "ReconnectPolicy.max_delay must be > 0"),
        ("multiplier", 0.5, "ReconnectPolicy.multiplier must be >= 1"),
        ("jitter", "lots", "ReconnectPolicy.jitter must be one of"),
        ("max_attempts", 0, "ReconnectPolicy.max_attempts must be None"),
        ("max_attempts", 2.5, "ReconnectPolicy.max_attempts must be None"),
        ("max_elapsed", 0, "ReconnectPolicy.max_elapsed must be > 0"),
        ("reset_after", -1, "ReconnectPolicy.reset_after must be >= 0"),
        ("connect_timeout", float("inf"), "ReconnectPolicy.connect_timeout must be finite"),
        ("probe_delay", 0, "ReconnectPolicy.probe_delay must be > 0"),
        ("probe_delay", float("nan"), "ReconnectPolicy.probe_delay must be > 0, got nan"),
    ],
)
def test_invalid_reconnect_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReconnectPolicy(**{field: value})  # type: ignore[arg-type]


def test_max_delay_below_initial_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="max_delay must be >= initial_delay"):
        ReconnectPolicy(initial_delay=5, max_delay=1)


def test_policies_are_frozen_and_evolve_validates() -> None:
    policy = ReconnectPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_delay = 1.0  # type: ignore[misc]
    slower = policy.evolve(initial_delay=0.5)
    assert slower.initial_delay == 0.5
    assert policy.initial_delay == 0.1
    assert attrs.evolve(policy, max_attempts=5).max_attempts == 5
    with pytest.raises(ValueError, match="initial_delay"):
        policy.evolve(initial_delay=-1)
    assert "ReconnectPolicy(initial_delay=0.1" in repr(policy)


@pytest.mark.parametrize(("field", "value"), [("interval", 0), ("timeout", -1), ("interval", "5")])
def test_invalid_keepalive_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"KeepalivePolicy.{field} must be > 0"):
        KeepalivePolicy(**{field: value})  # type: ignore[arg-type]


def test_keepalive_asks_the_server_for_whole_seconds() -> None:
    assert KeepalivePolicy(interval=0.2, timeout=0.2).disconnect_delay == 1
    assert KeepalivePolicy(interval=5, timeout=5).disconnect_delay == 10
    assert KeepalivePolicy(interval=2.5, timeout=1).disconnect_delay == 4
    assert KeepalivePolicy(interval=0.2, timeout=0.3).detection_bound == 0.5


def test_a_short_outage_never_costs_a_long_wait() -> None:
    """Instant failures climb the exponent fast; the ceiling stays within the outage."""
    policy = ReconnectPolicy(initial_delay=0.5)  # cap_by_elapsed is on by default
    assert policy.ceiling(7) == 30.0  # no elapsed time given: the plain exponential
    assert policy.ceiling(7, elapsed=10.0) == 10.0  # ten seconds in: at most ten
    assert policy.ceiling(7, elapsed=0.1) == policy.initial_delay  # never below it
    assert policy.ceiling(2, elapsed=60.0) == 1.0  # the exponential still rules early
    rng = random.Random(3)
    assert all(policy.delay(9, rng, elapsed=2.0) <= 2.0 for _ in range(1000))
    uncapped = policy.evolve(cap_by_elapsed=False)
    assert uncapped.ceiling(7, elapsed=10.0) == 30.0


@given(policies, st.integers(min_value=1, max_value=200), st.floats(0, 1e6), st.integers())
def test_capped_delay_stays_within_elapsed_or_initial_delay(
    policy: ReconnectPolicy, attempt: int, elapsed: float, seed: int
) -> None:
    delay = policy.delay(attempt, random.Random(seed), elapsed)
    assert 0 <= delay <= policy.ceiling(attempt)
    assert delay <= max(policy.initial_delay, elapsed) or not policy.cap_by_elapsed


@given(policies, st.integers())
def test_a_probe_waits_within_the_upper_half_of_probe_delay(
    policy: ReconnectPolicy, seed: int
) -> None:
    """A try that never reached the server is followed within probe_delay, never at once."""
    wait = policy.probe_wait(random.Random(seed))
    if policy.jitter == "none":
        assert wait == policy.probe_delay
    else:
        assert policy.probe_delay / 2 <= wait <= policy.probe_delay


def test_cap_by_elapsed_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="cap_by_elapsed"):
        ReconnectPolicy(cap_by_elapsed="yes")  # type: ignore[arg-type]
