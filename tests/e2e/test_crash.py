"""Crash safety of the foundation: a worker killed with SIGKILL mid-flight loses nothing and
runs nothing twice to completion once it is back."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import API_KEY, db_fetch, wait_for
from tests.e2e.processes import Services

pytestmark = pytest.mark.e2e

MISSIONS = 30
WORKFLOW = {
    "name": "two-counts",
    "steps": [
        {"id": "first", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "second", "agent": "line-counter", "depends_on": ["first"], "input": {"text": "{{ input.text }}"}},
    ],
}


async def test_a_worker_killed_mid_flight_loses_nothing(services: Services) -> None:
    for service in ("sandbox", "orchestrator", "worker"):
        services.start(service)
    for service in ("sandbox", "orchestrator", "worker"):
        await wait_for(lambda s=service: services.ready(s), timeout_s=60, what=f"{service} ready")  # type: ignore[misc]

    base = f"http://127.0.0.1:{services.settings.orchestrator_port}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        assert (await c.post("/v1/workflows", json=WORKFLOW)).status_code == 201
        for i in range(MISSIONS):
            response = await c.post("/v1/missions", json={"workflow": "two-counts", "input": {"text": "x\n" * (i + 1)}})
            assert response.status_code == 202

    settings = services.settings

    async def some_done() -> bool:
        rows = await db_fetch(settings, "SELECT count(*) AS n FROM agent_results")
        return 5 <= rows[0]["n"] < MISSIONS * 2

    await wait_for(some_done, timeout_s=60, interval_s=0.02, what="some results, not all")
    services.kill("worker")  # mid-flight: items fetched and not acked, sandbox calls in progress
    services.start("worker")

    async def all_done() -> bool:
        rows = await db_fetch(settings, "SELECT status FROM missions")
        return all(row["status"] in ("succeeded", "failed", "cancelled") for row in rows)

    await wait_for(all_done, timeout_s=120, interval_s=0.2, what="every mission to finish after the restart")
    statuses = await db_fetch(settings, "SELECT status, count(*) AS n FROM missions GROUP BY 1")
    assert {row["status"]: row["n"] for row in statuses} == {"succeeded": MISSIONS}
    per_attempt = await db_fetch(settings, "SELECT step_id, attempt, count(*) AS n FROM agent_results GROUP BY 1, 2")
    assert all(row["n"] == 1 for row in per_attempt)
    succeeded = await db_fetch(
        settings, "SELECT step_id, count(*) AS n FROM agent_results WHERE success GROUP BY 1 HAVING count(*) > 1"
    )
    assert succeeded == [], "a step completed twice"
    steps = await db_fetch(settings, "SELECT count(*) AS n FROM steps WHERE status = 'succeeded'")
    assert steps[0]["n"] == MISSIONS * 2
