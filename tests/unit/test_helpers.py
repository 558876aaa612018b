"""The small shared helpers: backoff delays, once-per-period warnings (with an injected clock), key matching."""

from __future__ import annotations

from xenios_ai.backoff import Doubling, exponential
from xenios_ai.keys import key_matches
from xenios_ai.throttle import OncePer


def test_exponential_doubles_per_attempt_up_to_the_cap_and_jitters_within_its_factors() -> None:
    assert [exponential(0.2, n) for n in range(4)] == [0.2, 0.4, 0.8, 1.6]
    assert exponential(2.0, 10, cap=300.0) == 300.0
    for _ in range(200):
        assert 5.0 <= exponential(10.0, 0, jitter=(0.5, 1.0)) <= 10.0


def test_doubling_grows_to_its_cap_and_starts_over_after_reset() -> None:
    delay = Doubling(0.1, 0.5)
    assert [delay.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    delay.reset()
    assert delay.next() == 0.1


def test_once_per_is_ready_first_then_only_after_its_period() -> None:
    now = [1000.0]
    once = OncePer(60.0, clock=lambda: now[0])
    assert once.ready()
    now[0] += 59.9
    assert not once.ready()
    now[0] += 0.1
    assert once.ready()
    assert not once.ready()


def test_key_matches_any_configured_key_exactly() -> None:
    assert key_matches("b", ["a", "b"])
    assert not key_matches("b ", ["a", "b"])
    assert not key_matches(None, ["a"])
    assert not key_matches("a", [])
