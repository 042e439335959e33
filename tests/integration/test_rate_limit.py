"""The per-key rate limit: counted in memory by each replica, reconciled through ``rate_limit_windows``.

One replica is exact; two replicas sharing the database over-admit at most what the module's
docstring says (each may spend the allowance left at its last reconcile), and see each other's
counts after a reconcile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db.session import create_engine
from services.common.settings import Settings
from services.orchestrator.ratelimit import RateLimiter
from tests.conftest import API_KEY, db_fetch, running_apps, wait_for

LIMIT = 20


@pytest.fixture
async def engines(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two replicas' engines on one database."""
    first = create_engine(settings, application_name="coo-ratelimit-a", pool_size=2)
    second = create_engine(settings, application_name="coo-ratelimit-b", pool_size=2)
    try:

        async def early_in_a_minute() -> bool:  # a burst must fit in one minute of the window
            return datetime.now(UTC).second < 45

        await wait_for(early_in_a_minute, timeout_s=20, what="the start of a minute")
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


async def _admitted(limiter: RateLimiter, bucket: str, requests: int) -> int:
    return sum([(await limiter.hit(bucket)).allowed for _ in range(requests)])


async def _stored(settings: Settings, bucket: str) -> int:
    rows = await db_fetch(
        settings, "SELECT coalesce(sum(count), 0) AS n FROM rate_limit_windows WHERE bucket = $1", bucket
    )
    return int(rows[0]["n"])


async def test_one_replica_is_exact_across_reconciles(
    settings: Settings, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    limiter = RateLimiter(engines[0], LIMIT)
    assert await _admitted(limiter, "solo", 12) == 12
    await limiter.reconcile()
    assert await _stored(settings, "solo") == 12
    assert await _admitted(limiter, "solo", 6) == 6
    await limiter.reconcile()  # mid-burst: what was counted locally is not counted twice
    assert await _admitted(limiter, "solo", 10) == 2  # the 19th and 20th, then nothing
    last = await limiter.hit("solo")
    assert not last.allowed and 1 <= last.retry_after_s <= 60 and last.remaining == 0
    await limiter.reconcile()
    assert await _stored(settings, "solo") == LIMIT  # refused requests are not counted


async def test_two_replicas_over_admit_at_most_the_documented_bound_then_agree(
    settings: Settings, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    a, b = RateLimiter(engines[0], LIMIT), RateLimiter(engines[1], LIMIT)
    replicas = 2

    # Nothing used at the last reconcile: the allowance left is the whole limit, and each replica
    # may spend it without seeing the other: at most N x LIMIT in all.
    admitted = await _admitted(a, "shared", 30) + await _admitted(b, "shared", 30)
    assert LIMIT <= admitted <= replicas * LIMIT
    await a.reconcile()
    await b.reconcile()
    await a.reconcile()  # now each has read what the other added
    assert await _stored(settings, "shared") == admitted
    assert not (await a.hit("shared")).allowed and not (await b.hit("shared")).allowed

    # A key with 15 used at the last reconcile: 5 left, so at most 15 + N x 5 admitted in all.
    assert await _admitted(a, "later", 15) == 15
    await a.reconcile()
    await b.reconcile()  # b reads a's 15 the first time it sees the key anyway; this keeps it fresh
    left = LIMIT - 15
    total = 15 + await _admitted(a, "later", 10) + await _admitted(b, "later", 10)
    assert LIMIT <= total <= 15 + replicas * left
    await a.reconcile()
    await b.reconcile()
    await a.reconcile()
    assert await _stored(settings, "later") == total
    assert not (await a.hit("later")).allowed and not (await b.hit("later")).allowed


async def test_a_key_first_seen_by_a_replica_starts_from_the_others_counts(
    settings: Settings, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    a, b = RateLimiter(engines[0], LIMIT), RateLimiter(engines[1], LIMIT)
    assert await _admitted(a, "seen", LIMIT) == LIMIT
    await a.reconcile()
    assert await _admitted(b, "seen", 5) == 0  # a new replica (or a restarted one) reads the table first


async def test_the_background_task_flushes_and_stopping_flushes_the_rest(
    settings: Settings, engines: tuple[AsyncEngine, AsyncEngine]
) -> None:
    async with RateLimiter(engines[0], LIMIT, sync_every_s=0.05) as a:
        assert await _admitted(a, "task", 7) == 7

        async def flushed() -> bool:
            return await _stored(settings, "task") == 7

        await wait_for(flushed, timeout_s=10, what="the reconcile task to add the hits")
        async with RateLimiter(engines[1], LIMIT, sync_every_s=3600) as b:
            assert await _admitted(b, "task", 3) == 3
        assert await _stored(settings, "task") == 10  # b's last hits, added when it stopped

        await a.reconcile()  # (while its task runs too) a reads b's hits
        assert await _admitted(a, "task", 15) == LIMIT - 10


async def test_the_api_answers_429_with_retry_after_and_counts_it(settings: Settings) -> None:
    from services.orchestrator.app import create_app

    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    async with (
        running_apps(limited, create_app) as apps,
        httpx.AsyncClient(base_url=apps[0].url, headers={"Authorization": f"Bearer {API_KEY}"}) as client,
    ):
        answers = [(await client.get("/v1/agents")).status_code for _ in range(4)]
        refused = await client.get("/v1/agents")
        metrics = (await client.get("/metrics")).text
    assert answers == [200, 200, 200, 429] and refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and refused.headers["RateLimit-Limit"] == "3"
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "coo_rate_limited_requests_total 2.0" in metrics
