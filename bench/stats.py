"""Numbers shared by every system: arrival schedules, throughput and latency summaries.

Every result is a plain dict (it goes to JSON as is). Throughput is always ``completed / seconds``
from the first submission to the last completion, so systems are measured the same way."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

ARRIVAL_SEED = 20240601


def poisson_arrivals(rate_per_s: float, duration_s: float, max_count: int, seed: int = ARRIVAL_SEED) -> list[float]:
    """Offsets (seconds from start) of an open-loop Poisson arrival process, bounded in time and count."""
    if rate_per_s <= 0:
        return []
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while len(out) < max_count:
        t += rng.expovariate(rate_per_s)
        if t > duration_s:
            break
        out.append(t)
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def cdf_points(sorted_values: Sequence[float], max_points: int = 400) -> list[list[float]]:
    """At most ``max_points`` (value, fraction) pairs of the empirical CDF, for charts."""
    n = len(sorted_values)
    if n == 0:
        return []
    step = max(1, n // max_points)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [[round(float(sorted_values[i]), 6), round((i + 1) / n, 6)] for i in idx]


def throughput(
    *,
    unit: str,
    items: int,
    steps_per_item: int,
    completed: int,
    failed: int,
    unfinished: int,
    submit_errors: int,
    first_submit: float,
    last_submit: float,
    last_completion: float | None,
    timed_out: bool,
    note: str = "",
) -> dict[str, Any]:
    """Throughput of a closed batch: ``completed`` items from the first submission to the last completion."""
    elapsed = (last_completion - first_submit) if last_completion is not None else math.nan
    ok = completed > 0 and elapsed > 0
    per_s = completed / elapsed if ok else 0.0
    return {
        "unit": unit,
        "items": items,
        "steps_per_item": steps_per_item,
        "completed": completed,
        "failed": failed,
        "unfinished": unfinished,
        "submit_errors": submit_errors,
        "timed_out": timed_out,
        "submit_s": round(last_submit - first_submit, 4),
        "elapsed_s": round(elapsed, 4) if ok else None,
        "items_per_s": round(per_s, 3),
        "steps_per_s": round(per_s * steps_per_item, 3),
        "note": note,
    }


def latency(
    *,
    target_rate_per_s: float,
    duration_s: float,
    scheduled: int,
    sent: int,
    latencies_s: Sequence[float],
    failed: int,
    unfinished: int,
    submit_errors: int,
    max_send_lag_s: float,
    note: str = "",
) -> dict[str, Any]:
    """Open-loop latency (submit -> succeeded) of the items that completed."""
    values = sorted(latencies_s)
    return {
        "target_rate_per_s": round(target_rate_per_s, 3),
        "duration_s": round(duration_s, 3),
        "scheduled": scheduled,
        "sent": sent,
        "completed": len(values),
        "failed": failed,
        "unfinished": unfinished,
        "submit_errors": submit_errors,
        "max_send_lag_s": round(max_send_lag_s, 4),
        "p50_s": round(percentile(values, 50), 4) if values else None,
        "p95_s": round(percentile(values, 95), 4) if values else None,
        "p99_s": round(percentile(values, 99), 4) if values else None,
        "max_s": round(values[-1], 4) if values else None,
        "cdf": cdf_points(values),
        "note": note,
    }


def skipped(reason: str) -> dict[str, Any]:
    return {"skipped": True, "reason": reason}
