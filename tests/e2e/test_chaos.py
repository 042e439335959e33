"""Chaos: 200 missions of a 3-step workflow while the worker and one of two orchestrator replicas
are killed with SIGKILL at random moments and restarted. Every mission must succeed, every step
exactly once, with no attempt's result recorded twice."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.conftest import API_KEY, db_fetch, wait_for
from tests.e2e.processes import Services

pytestmark = pytest.mark.e2e

MISSIONS = 200
KILLS = 6
WORKFLOW = {
    "name": "three-counts",
    "steps": [
        {"id": "first", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "second", "agent": "line-counter", "depends_on": ["first"], "input": {"text": "{{ input.text }}"}},
        {"id": "third", "agent": "echo", "depends_on": ["second"], "input": {"lines": "{{ second.output.lines }}"}},
    ],
}


async def _submit_all(services: Services, urls: list[str]) -> list[str]:
    """Submit every mission, retrying on the other replica when one is down (same idempotency key)."""
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        for i in range(MISSIONS):
            body = {"workflow": "three-counts", "input": {"text": "x\n" * (i % 7 + 1)}, "idempotency_key": f"m-{i}"}
            for attempt in range(40):
                try:
                    response = await client.post(f"{urls[(i + attempt) % 2]}/v1/missions", json=body)
                except httpx.TransportError:
                    continue
                if response.status_code == 202:
                    ids.append(response.json()["id"])
                    break
            else:
                raise AssertionError(f"mission {i} could not be submitted to either replica")
    return ids


async def _chaos(services: Services, rng: random.Random, stop: asyncio.Event) -> list[str]:
    killed: list[str] = []
    for _ in range(KILLS):
        try:
            async with asyncio.timeout(rng.uniform(0.5, 2.5)):
                await stop.wait()
            return killed
        except TimeoutError:
            pass
        victim = rng.choice(["worker", "orchestrator-2"])
        services.kill(victim)
        killed.append(victim)
        if victim == "orchestrator-2":
            services.start("orchestrator", name=victim)
        else:
            services.start("worker")
    return killed


async def test_200_missions_survive_sigkills_of_the_worker_and_an_orchestrator(services: Services) -> None:
    services.replica("orchestrator", "orchestrator-2")
    services.start("sandbox")
    services.start("orchestrator")
    services.start("orchestrator", name="orchestrator-2")
    services.start("worker")
    for name in ("sandbox", "orchestrator", "orchestrator-2", "worker"):
        await wait_for(lambda n=name: services.ready(n), timeout_s=60, what=f"{name} ready")  # type: ignore[misc]

    urls = [services.url("orchestrator"), services.url("orchestrator-2")]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        assert (await client.post(f"{urls[0]}/v1/workflows", json=WORKFLOW)).status_code == 201

    rng = random.Random(20261123)
    stop = asyncio.Event()
    chaos = asyncio.create_task(_chaos(services, rng, stop))
    ids = await _submit_all(services, urls)
    assert len(set(ids)) == MISSIONS

    settings = services.settings

    async def all_final() -> bool:
        rows = await db_fetch(
            settings, "SELECT count(*) AS n FROM missions WHERE status IN ('succeeded','failed','cancelled')"
        )
        return int(rows[0]["n"]) == MISSIONS

    try:
        await wait_for(all_final, timeout_s=300, interval_s=0.5, what="every mission to finish")
    except AssertionError as exc:  # say where the unfinished missions are
        missions = await db_fetch(settings, "SELECT status, count(*) AS n FROM missions GROUP BY 1")
        stuck = await db_fetch(
            settings,
            "SELECT s.key, s.status, s.attempt, s.dispatched_at::text AS dispatched_at, m.status AS mission, "
            "(SELECT count(*) FROM agent_results r WHERE r.step_id = s.id) AS results, "
            "(SELECT string_agg(e.type, ',' ORDER BY e.id) FROM timeline_events e WHERE e.mission_id = m.id) "
            "AS events FROM steps s JOIN missions m ON m.id = s.mission_id "
            "WHERE s.status NOT IN ('succeeded', 'pending') LIMIT 5",
        )
        where = f"missions {[dict(r) for r in missions]}; stuck {[dict(r) for r in stuck]}"
        raise AssertionError(f"{exc}; {where}") from exc
    finally:
        stop.set()
        killed = await chaos
    assert killed, "the chaos loop killed nothing"

    statuses = await db_fetch(settings, "SELECT status, count(*) AS n FROM missions GROUP BY 1")
    failures = await db_fetch(
        settings,
        "SELECT m.error::text AS error, r.tool_calls::text AS calls, r.stderr FROM missions m "
        "LEFT JOIN agent_results r ON r.mission_id = m.id AND NOT r.success WHERE m.status <> 'succeeded' LIMIT 3",
    )
    if failures:  # in full: pytest cuts a long assertion message short
        print("failed missions:", json.dumps([dict(r) for r in failures], indent=2, default=str))  # noqa: T201
    assert {r["status"]: r["n"] for r in statuses} == {"succeeded": MISSIONS}, [dict(r) for r in failures]
    steps = await db_fetch(settings, "SELECT status, count(*) AS n FROM steps GROUP BY 1")
    assert {r["status"]: r["n"] for r in steps} == {"succeeded": MISSIONS * 3}
    per_step = await db_fetch(
        settings,
        "SELECT s.id, count(r.id) FILTER (WHERE r.success) AS ok FROM steps s "
        "LEFT JOIN agent_results r ON r.step_id = s.id GROUP BY s.id",
    )
    assert len(per_step) == MISSIONS * 3
    assert {r["ok"] for r in per_step} == {1}, "a step without, or with more than one, succeeded attempt"
    duplicates = await db_fetch(
        settings, "SELECT step_id, attempt FROM agent_results GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert duplicates == []
    outputs = await db_fetch(settings, "SELECT input, output FROM missions")
    for row in outputs:
        text, output = json.loads(row["input"]), json.loads(row["output"])
        assert output == {"third": {"echo": {"lines": text["text"].count("\n")}}}
