"""A worker told to stop (SIGTERM: uvicorn's shutdown) stops pulling, lets its running attempts
finish within COO_WORKER_DRAIN_S, and hands back the rest at once: another worker runs them
without waiting for the ack deadline, and the attempt still completes exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from services.common.settings import Settings
from services.worker.app import create_app as create_worker
from tests.conftest import RunningApp, Stack, db_fetch, start_stack, stop_stack, wait_for

SLOW = {
    "name": "slow",
    "steps": [
        {
            "id": "a",
            "agent": "echo",
            "input": {"v": 1},
            "timeout_s": 120,
            "checks": [{"name": "slow", "argv": ["sleep", "4"], "timeout_s": 60}],
        }
    ],
}


@pytest.fixture
async def draining(settings: Settings) -> AsyncIterator[Stack]:
    running = await start_stack(settings.model_copy(update={"worker_drain_s": 0.3, "ack_wait_s": 60.0}))
    try:
        yield running
    finally:
        await stop_stack(running)


async def work_consumer(settings: Settings) -> Any:
    nc = await nats.connect(settings.nats_url or "")
    try:
        js = nc.jetstream()
        (info,) = await js.consumers_info(f"{settings.bus_prefix}_COO_WORK")
        return info
    finally:
        await nc.close()


async def test_a_stopping_worker_hands_back_what_it_cannot_finish(draining: Stack) -> None:
    stack = draining
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=SLOW)).status_code == 201
        mission_id = (await client.post("/v1/missions", json={"workflow": "slow", "input": {}})).json()["id"]

        async def running() -> bool:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return bool(body["steps"][0]["status"] == "running")

        await wait_for(running, timeout_s=20, what="the step running on the first worker")
        await stack.worker.stop()  # what SIGTERM does: uvicorn shuts the app's lifespan down
        info = await work_consumer(stack.settings)
        # handed back (nak'd with a delay), not taken by anyone yet; NATS 2.9 already counts a nak'd
        # message as redelivered, 2.10 and later only once it is delivered again
        assert info.num_ack_pending == 1 and info.num_redelivered in (0, 1), info

        replacement = RunningApp(create_worker(stack.settings), stack.settings.worker_port)
        await replacement.start()
        stack.worker = replacement

        async def finished() -> str | None:
            status: str = (await client.get(f"/v1/missions/{mission_id}")).json()["status"]
            return status if status in ("succeeded", "failed") else None

        # Within 40 s, though the ack wait is 60 s: the second worker had it at once, not after the deadline.
        assert await wait_for(finished, timeout_s=40, what="the mission finished by the second worker") == "succeeded"
    rows = await db_fetch(stack.settings, "SELECT attempt FROM agent_results WHERE mission_id = $1::uuid", mission_id)
    assert [row["attempt"] for row in rows] == [1]  # the same attempt, stored once
    runs = await db_fetch(
        stack.settings,
        "SELECT status, error FROM sandbox_runs WHERE mission_id = $1::uuid ORDER BY started_at",
        mission_id,
    )
    # The first worker's check was stopped when it gave the attempt up, not left to run for nobody.
    assert [run["status"] for run in runs] == ["cancelled", "succeeded"], runs
    assert "gave the attempt up" in runs[0]["error"]
