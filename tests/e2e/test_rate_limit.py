"""The per-key rate limit is one limit, however many orchestrator replicas answer (within the
over-admission bound the rate limiter documents)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import API_KEY, wait_for
from tests.e2e.processes import Services

pytestmark = pytest.mark.e2e

LIMIT = 100


async def test_past_the_limit_both_orchestrators_answer_429_once_they_have_reconciled(services: Services) -> None:
    """Each replica counts in memory and reconciles through Postgres about once a second: past the
    limit, both refuse once each has read the other's counts, having admitted at most what
    services/orchestrator/ratelimit.py documents (N - 1 times the allowance left at the last reconcile)."""
    services.replica("orchestrator", "orchestrator-2")
    for name in ("orchestrator", "orchestrator-2"):
        services.start("orchestrator", name=name, COO_RATE_LIMIT_PER_MINUTE=str(LIMIT))
    for name in ("orchestrator", "orchestrator-2"):
        await wait_for(lambda n=name: services.ready(n), timeout_s=60, what=f"{name} ready")  # type: ignore[misc]

    async def early_in_a_minute() -> bool:  # the burst must fit in one minute of the window
        return datetime.now(UTC).second < 40

    await wait_for(early_in_a_minute, timeout_s=25, what="the start of a minute")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    urls = [services.url("orchestrator"), services.url("orchestrator-2")]
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        answers = [(await client.get(f"{urls[i % 2]}/v1/agents")).status_code for i in range(LIMIT)]
        assert answers == [200] * LIMIT
        extra: list[int] = []

        async def both_refuse() -> list[httpx.Response] | None:
            replies = [await client.get(f"{url}/v1/agents") for url in urls]
            extra.extend(r.status_code for r in replies if r.status_code == 200)
            return replies if all(r.status_code == 429 for r in replies) else None

        refused, other = await wait_for(both_refuse, timeout_s=10, interval_s=0.25, what="both replicas to refuse")
        unauthenticated = await client.get(f"{urls[0]}/v1/agents", headers={"Authorization": "Bearer wrong"})
        health = await client.get(f"{urls[0]}/healthz")

    assert len(extra) <= (2 - 1) * LIMIT  # at most (N - 1) x the allowance left at the last reconcile
    assert refused.status_code == 429 and other.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limited" and f"{LIMIT} requests per minute" in error["message"]
    assert unauthenticated.status_code == 401  # keys are checked first; a bad key spends no one's budget
    assert health.status_code == 200  # health, readiness and metrics are never limited
