"""The per-key rate limit is one limit, however many orchestrator replicas answer."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import API_KEY, wait_for
from tests.e2e.processes import Services

pytestmark = pytest.mark.e2e

LIMIT = 100


async def test_the_101st_request_in_a_minute_gets_429_across_two_orchestrators(services: Services) -> None:
    services.replica("orchestrator", "orchestrator-2")
    for name in ("orchestrator", "orchestrator-2"):
        services.start("orchestrator", name=name, COO_RATE_LIMIT_PER_MINUTE=str(LIMIT))
    for name in ("orchestrator", "orchestrator-2"):
        await wait_for(lambda n=name: services.ready(n), timeout_s=60, what=f"{name} ready")  # type: ignore[misc]

    async def early_in_a_minute() -> bool:  # the burst must fit in one minute of the window
        return datetime.now(UTC).second < 45

    await wait_for(early_in_a_minute, timeout_s=20, what="the start of a minute")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    urls = [services.url("orchestrator"), services.url("orchestrator-2")]
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        answers = [(await client.get(f"{urls[i % 2]}/v1/agents")).status_code for i in range(LIMIT)]
        assert answers == [200] * LIMIT
        refused = await client.get(f"{urls[LIMIT % 2]}/v1/agents")
        other = await client.get(f"{urls[(LIMIT + 1) % 2]}/v1/agents")
        unauthenticated = await client.get(f"{urls[0]}/v1/agents", headers={"Authorization": "Bearer wrong"})
        health = await client.get(f"{urls[0]}/healthz")

    assert refused.status_code == 429 and other.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limited" and f"{LIMIT} requests per minute" in error["message"]
    assert unauthenticated.status_code == 401  # keys are checked first; a bad key spends no one's budget
    assert health.status_code == 200  # health, readiness and metrics are never limited
