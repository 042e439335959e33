"""Per-API-key rate limit, shared by every orchestrator replica through Postgres.

A sliding-window counter: one row per (key, minute) counts requests; a request is refused when
``previous_minute * (1 - elapsed/60) + this_minute`` passes the limit. One upsert per request, on
the database clock, so replicas agree without talking to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

WINDOW_S = 60.0

_HIT = text(
    """
    WITH w AS (SELECT date_trunc('minute', clock_timestamp()) AS start)
    INSERT INTO rate_limit_windows AS r (bucket, window_start, count)
    SELECT :bucket, w.start, 1 FROM w
    ON CONFLICT (bucket, window_start) DO UPDATE SET count = r.count + 1
    RETURNING r.count AS current,
      r.window_start AS window_start,
      COALESCE((SELECT p.count FROM rate_limit_windows p
                WHERE p.bucket = :bucket AND p.window_start = r.window_start - interval '1 minute'), 0) AS previous,
      extract(epoch FROM clock_timestamp() - r.window_start)::float8 AS elapsed
    """
)
_UNDO = text("UPDATE rate_limit_windows SET count = count - 1 WHERE bucket = :bucket AND window_start = :start")
_PRUNE = text("DELETE FROM rate_limit_windows WHERE window_start < clock_timestamp() - interval '3 minutes'")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


def decide(current: int, previous: int, elapsed_s: float, limit: int) -> Decision:
    """The sliding-window rule, given this request already counted in ``current``."""
    weight = max(0.0, (WINDOW_S - elapsed_s) / WINDOW_S)
    estimate = previous * weight + current
    if estimate <= limit:
        return Decision(True, limit, max(0, math.floor(limit - estimate)), 0)
    if current > limit or previous == 0:
        wait = WINDOW_S - elapsed_s  # this minute alone is over: wait for the next one
    else:  # wait until the previous minute's weight has decayed enough
        wait = WINDOW_S - elapsed_s - (limit - current) * WINDOW_S / previous
    return Decision(False, limit, 0, max(1, math.ceil(wait)))


class RateLimiter:
    def __init__(self, engine: AsyncEngine, per_minute: int) -> None:
        self.engine = engine
        self.per_minute = per_minute

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def hit(self, bucket: str) -> Decision:
        """Count one request of ``bucket``; a refused request is not counted."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_HIT, {"bucket": bucket})).one()
            decision = decide(int(row.current), int(row.previous), float(row.elapsed), self.per_minute)
            if not decision.allowed:
                await conn.execute(_UNDO, {"bucket": bucket, "start": row.window_start})
            await conn.commit()
        return decision

    async def prune(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_PRUNE)
