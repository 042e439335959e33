"""Per-API-key rate limit, counted in memory by each orchestrator replica and reconciled through
Postgres about once a second.

A sliding-window counter: one row of ``rate_limit_windows`` per (key, minute) counts requests; a
request is refused when ``previous_minute * (1 - elapsed/60) + this_minute`` passes the limit
(``decide``). Minutes are the database's (each replica keeps its offset to the database clock).

A request costs no database round trip. Each replica decides from what it saw at its last
reconcile (every replica's counts for the key's two minutes, read from the table) plus its own
hits since then, which it counts exactly. A background task (``run``, owned by the lifespan)
adds each key's new hits to its row with one upsert per key and minute, then reads every known
key's totals back, about every ``SYNC_EVERY_S``. A key seen for the first time is read from the
table before its first decision.

How far it can over-admit. One replica never over-admits: the table holds only what it added, and
it counts its own hits not yet added, so it admits exactly what the rule allows. With N replicas, a
replica does not see the hits the others admitted since their last reconcile. If R is the allowance
the key had left at the last reconcile (``limit - estimate`` then), each replica may admit up to R
(plus what the previous minute's decaying weight frees meanwhile) before its next reconcile, without
seeing the others: the key is admitted at most N * R times where the limit allows R, that is at most
(N - 1) * R requests too many, and never more than the other replicas serve in one reconcile
interval (``SYNC_EVERY_S`` plus the time a reconcile takes). Once every replica has reconciled, all
of them see the total and refuse: the excess does not carry past the next interval.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.logging import get_logger

log = get_logger(__name__)

WINDOW_S = 60.0
SYNC_EVERY_S = 1.0  # how often each replica reconciles with the others through Postgres
FORGET_AFTER_S = 180.0  # a key not used for this long is dropped from memory (read again if it returns)

_ADD = text(
    """
    INSERT INTO rate_limit_windows AS r (bucket, window_start, count)
    VALUES (:bucket, to_timestamp(:start), :n)
    ON CONFLICT (bucket, window_start) DO UPDATE SET count = r.count + excluded.count
    """
)
_READ = text(
    """
    SELECT bucket, extract(epoch FROM window_start)::float8 AS start, count AS n FROM rate_limit_windows
    WHERE bucket IN :buckets AND window_start >= date_trunc('minute', clock_timestamp()) - interval '2 minutes'
    """
).bindparams(bindparam("buckets", expanding=True))
_CLOCK = text("SELECT extract(epoch FROM clock_timestamp())::float8")
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


@dataclass
class _Key:
    """One key's counts per minute (keyed by the minute's start, epoch seconds on the database clock)."""

    synced: dict[int, int] = field(default_factory=dict)  # every replica's, as read at the last reconcile
    flushing: dict[int, int] = field(default_factory=dict)  # this replica's, being added by a reconcile now
    pending: dict[int, int] = field(default_factory=dict)  # this replica's, not yet flushed
    used_at: float = 0.0

    def count(self, start: int) -> int:
        return self.synced.get(start, 0) + self.flushing.get(start, 0) + self.pending.get(start, 0)


class RateLimiter:
    """The limit for every key; ``async with`` it to run the reconcile task."""

    def __init__(self, engine: AsyncEngine, per_minute: int, *, sync_every_s: float = SYNC_EVERY_S) -> None:
        self.engine = engine
        self.per_minute = per_minute
        self.sync_every_s = sync_every_s
        self._keys: dict[str, _Key] = {}
        self._clock_offset = 0.0  # database clock minus this process's
        self._task: asyncio.Task[None] | None = None
        self._reconciling = asyncio.Lock()  # one reconcile at a time: each owns the ``flushing`` counts

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _now(self) -> float:
        return time.time() + self._clock_offset

    async def hit(self, bucket: str) -> Decision:
        """Count one request of ``bucket``; a refused request is not counted."""
        key = self._keys.get(bucket)
        if key is None:
            key = await self._first_sight(bucket)
        now = self._now()
        start = int(now // WINDOW_S * WINDOW_S)
        decision = decide(key.count(start) + 1, key.count(start - int(WINDOW_S)), now - start, self.per_minute)
        if decision.allowed:
            key.pending[start] = key.pending.get(start, 0) + 1
        key.used_at = now
        return decision

    async def _first_sight(self, bucket: str) -> _Key:
        """A key this replica has not counted yet: what every replica counted, from the table."""
        async with self.engine.connect() as conn:
            counts = await self._read(conn, [bucket])
            await conn.commit()
        key = self._keys.get(bucket)  # another request may have read it meanwhile: keep its counts
        if key is None:
            key = self._keys[bucket] = _Key(synced=counts.get(bucket, {}))
        return key

    async def _read(self, conn: AsyncConnection, buckets: list[str]) -> dict[str, dict[int, int]]:
        before = time.time()
        db_now = float((await conn.execute(_CLOCK)).scalar_one())
        self._clock_offset = db_now - (before + time.time()) / 2
        counts: dict[str, dict[int, int]] = {bucket: {} for bucket in buckets}
        for row in await conn.execute(_READ, {"buckets": buckets}):
            counts[row.bucket][int(row.start)] = int(row.n)
        return counts

    async def reconcile(self) -> None:
        """Add this replica's new hits to the table (one upsert per key and minute), then read back
        every known key's totals, all in one transaction."""
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        now = self._now()
        for bucket in [b for b, k in self._keys.items() if now - k.used_at > FORGET_AFTER_S and not k.pending]:
            del self._keys[bucket]
        keys = dict(self._keys)  # a key first seen meanwhile keeps the counts it was read with
        if not keys:
            return
        for key in keys.values():  # from now on new hits go to a fresh ``pending``
            key.flushing, key.pending = key.pending, {}
        additions: list[dict[str, Any]] = sorted(  # one order for every replica: no deadlock between them
            (
                {"bucket": bucket, "start": start, "n": n}
                for bucket, key in keys.items()
                for start, n in key.flushing.items()
            ),
            key=lambda a: (a["bucket"], a["start"]),
        )
        try:
            async with self.engine.begin() as conn:
                if additions:
                    await conn.execute(_ADD, additions)
                counts = await self._read(conn, list(keys))
        except BaseException:
            for key in keys.values():  # not added: added at the next reconcile instead
                for start, n in key.flushing.items():
                    key.pending[start] = key.pending.get(start, 0) + n
                key.flushing = {}
            raise
        for bucket, key in keys.items():
            key.flushing = {}
            key.synced = counts[bucket]  # every replica's, ours just added included

    async def run(self) -> None:
        """Reconcile about every ``sync_every_s`` until cancelled; a failed reconcile is logged and
        its counts are kept for the next one."""
        while True:
            await asyncio.sleep(self.sync_every_s)
            try:
                await self.reconcile()
            except Exception:
                log.exception("rate_limit_reconcile_failed", keys=len(self._keys))

    async def __aenter__(self) -> RateLimiter:
        if self.enabled:
            self._task = asyncio.create_task(self.run(), name="rate-limit-reconcile")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        try:  # the last hits reach the table, for the other replicas
            await self.reconcile()
        except Exception:
            log.exception("rate_limit_reconcile_failed", keys=len(self._keys), at="shutdown")

    async def prune(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_PRUNE)
