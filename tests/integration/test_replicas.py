"""Several replicas of every service share one installation: work is spread, nothing runs twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from services.common.settings import Settings
from tests.conftest import API_KEY, RunningApp, db_fetch, running_apps, wait_for

MISSIONS = 40
WORKFLOW = {
    "name": "count-twice",
    "steps": [
        {"id": "first", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "echo", "agent": "echo", "depends_on": ["first"], "input": {"lines": "{{ first.output.lines }}"}},
        {"id": "second", "agent": "line-counter", "depends_on": ["echo"], "input": {"text": "{{ input.text }}"}},
    ],
}


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[list[RunningApp]]:
    from services.orchestrator.app import create_app as orchestrator_app
    from services.sandbox.app import create_app as sandbox_app
    from services.worker.app import create_app as worker_app

    factories = (sandbox_app, sandbox_app, orchestrator_app, orchestrator_app, worker_app, worker_app)
    async with running_apps(settings, *factories) as apps:
        yield apps


async def test_two_of_each_service_complete_every_mission_exactly_once(
    settings: Settings, replicas: list[RunningApp]
) -> None:
    orchestrators = replicas[2:4]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        registered = await client.post(f"{orchestrators[0].url}/v1/workflows", json=WORKFLOW)
        assert registered.status_code == 201, registered.text

        async def submit(i: int) -> str:
            target = orchestrators[i % 2].url
            response = await client.post(
                f"{target}/v1/missions", json={"workflow": "count-twice", "input": {"text": "a b\n" * (i + 1)}}
            )
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(MISSIONS)))

        async def all_done() -> bool:
            rows = await db_fetch(settings, "SELECT status FROM missions")
            return len(rows) == MISSIONS and all(row["status"] in ("succeeded", "failed") for row in rows)

        await wait_for(all_done, timeout_s=120, interval_s=0.2, what="every mission to finish")

        sample = random.Random(7).sample(ids, 5)
        for mission_id in sample:
            mission = (await client.get(f"{orchestrators[1].url}/v1/missions/{mission_id}")).json()
            lines = int(mission["input"]["text"].count("\n"))
            assert mission["output"] == {"second": {"lines": lines, "words": 2 * lines, "bytes": 4 * lines}}

    statuses = await db_fetch(settings, "SELECT status, count(*) AS n FROM missions GROUP BY status")
    assert {row["status"]: row["n"] for row in statuses} == {"succeeded": MISSIONS}
    attempts = await db_fetch(settings, "SELECT DISTINCT attempt FROM steps")
    assert [row["attempt"] for row in attempts] == [1]  # nothing needed a second attempt
    results = await db_fetch(settings, "SELECT step_id, attempt, count(*) AS n FROM agent_results GROUP BY 1, 2")
    assert len(results) == MISSIONS * 3 and all(row["n"] == 1 for row in results)
    workers = await db_fetch(settings, "SELECT DISTINCT worker FROM agent_results")
    sandboxes = await db_fetch(settings, "SELECT DISTINCT instance_id FROM sandbox_runs")
    assert len(workers) == 2, "both workers took work"
    assert len(sandboxes) == 2, "both sandboxes ran commands"
    runs = await db_fetch(settings, "SELECT status, count(*) AS n FROM sandbox_runs GROUP BY status")
    assert {row["status"]: row["n"] for row in runs} == {"succeeded": MISSIONS * 2}
