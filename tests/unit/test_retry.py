"""Exponential backoff with full jitter, and retry-after as a floor."""

from __future__ import annotations

import random

import pytest

from services.orchestrator.engine.dag import RetryPolicy
from services.orchestrator.engine.retry import backoff_s

SAMPLES = 2000


def policy(base: float = 1.0, maximum: float = 60.0, *, jitter: bool = True) -> RetryPolicy:
    return RetryPolicy.model_validate({"base": base, "max": maximum, "jitter": jitter})


@pytest.mark.parametrize("attempt", range(1, 11))
def test_full_jitter_stays_within_zero_and_the_ceiling(attempt: int) -> None:
    rng = random.Random(1234 + attempt)
    ceiling = min(60.0, 1.0 * 2 ** (attempt - 1))
    delays = [backoff_s(policy(), attempt, rng=rng) for _ in range(SAMPLES)]
    assert all(0 <= d <= ceiling for d in delays)
    # full jitter spreads over the whole range, not just its upper half
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


def test_jitter_with_the_same_seed_is_reproducible() -> None:
    first = [backoff_s(policy(), 4, rng=random.Random(7)) for _ in range(5)]
    second = [backoff_s(policy(), 4, rng=random.Random(7)) for _ in range(5)]
    assert first == second


def test_jitter_without_an_rng_still_stays_in_range() -> None:
    assert all(0 <= backoff_s(policy(base=0.5, maximum=3), 3) <= 2.0 for _ in range(200))


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0), (30, 60.0)],
)
def test_without_jitter_the_delay_is_the_ceiling(attempt: int, expected: float) -> None:
    assert backoff_s(policy(jitter=False), attempt) == expected


def test_ceiling_scales_with_base() -> None:
    assert backoff_s(policy(base=0.25, maximum=100, jitter=False), 3) == 1.0


def test_attempt_zero_is_treated_as_the_first() -> None:
    assert backoff_s(policy(base=2, jitter=False), 0) == 2.0


def test_retry_after_is_a_floor_with_jitter() -> None:
    rng = random.Random(99)
    delays = [backoff_s(policy(), 3, retry_after_s=30.0, rng=rng) for _ in range(SAMPLES)]
    assert min(delays) >= 30.0
    assert max(delays) == 30.0  # the ceiling (4 s) is below the floor


def test_retry_after_is_a_floor_without_jitter() -> None:
    assert backoff_s(policy(jitter=False), 3, retry_after_s=10.0) == 10.0


def test_retry_after_below_the_backoff_does_not_shorten_it() -> None:
    assert backoff_s(policy(jitter=False), 5, retry_after_s=1.0) == 16.0
    rng = random.Random(5)
    delays = [backoff_s(policy(), 6, retry_after_s=1.0, rng=rng) for _ in range(SAMPLES)]
    assert all(1.0 <= d <= 32.0 for d in delays)
    assert max(delays) > 30.0


def test_an_absurd_retry_after_is_bounded() -> None:
    delay = backoff_s(policy(maximum=60, jitter=False), 1, retry_after_s=1e9)
    assert 60.0 <= delay <= 600.0
