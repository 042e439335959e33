"""Exponential backoff with full jitter."""

from __future__ import annotations

import random

from services.orchestrator.engine.dag import RetryPolicy


def backoff_s(
    policy: RetryPolicy, attempt: int, *, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before the attempt after ``attempt`` (1-based): uniform in [0, min(max, base·2^(attempt-1))].

    A server's ``retry-after`` is a floor: never retry sooner than it asked.
    """
    ceiling = min(policy.max_s, policy.base_s * (2 ** max(attempt - 1, 0)))
    delay = (rng or random).uniform(0, ceiling) if policy.jitter else ceiling
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.max_s * 10))
    return delay
