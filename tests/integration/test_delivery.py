"""Delivery guarantees the foundation gives: outputs flow between steps, lost dispatches are
published again without running an attempt twice, undecodable messages are dead-lettered."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import nats
import orjson

from services.orchestrator.engine.housekeeping import Housekeeper
from tests.conftest import Stack, db_fetch, wait_for
from tests.integration.test_control_engine import _mission as create_test_mission

CHAIN = {
    "name": "chain",
    "steps": [
        {"id": "a", "agent": "echo", "input": {"n": "{{ input.n }}"}},
        {"id": "b", "agent": "echo", "depends_on": ["a"], "input": {"from_a": "{{ steps.a.output.echo.n }}"}},
        {"id": "c", "agent": "echo", "depends_on": ["b"], "input": {"short": "{{ b.output.echo.from_a }}", "k": "x"}},
    ],
}


async def submit(stack: Stack, definition: dict[str, Any], mission_input: dict[str, Any]) -> str:
    async with stack.client() as client:
        registered = await client.post("/v1/workflows", json=definition)
        assert registered.status_code == 201, registered.text
        accepted = await client.post("/v1/missions", json={"workflow": definition["name"], "input": mission_input})
        assert accepted.status_code == 202, accepted.text
        return str(accepted.json()["id"])


async def finished(stack: Stack, mission_id: str) -> dict[str, Any]:
    async with stack.client() as client:

        async def done() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        result: dict[str, Any] = await wait_for(done, timeout_s=30, what="mission to finish")
        return result


async def test_outputs_flow_down_a_chain_with_native_types(stack: Stack) -> None:
    mission_id = await submit(stack, CHAIN, {"n": 41})
    mission = await finished(stack, mission_id)
    assert mission["status"] == "succeeded", mission
    steps = {step["key"]: step for step in mission["steps"]}
    assert steps["b"]["input"] == {"from_a": 41}  # a number stays a number
    assert steps["c"]["input"] == {"short": 41, "k": "x"}
    assert mission["output"] == {"c": {"echo": {"short": 41, "k": "x"}}}
    order = [(s["key"], s["started_at"], s["finished_at"]) for s in mission["steps"]]
    for (_, _, finished_before), (_, started_after, _) in itertools.pairwise(order):
        assert finished_before <= started_after  # each step ran after its dependency finished


async def test_missing_template_key_fails_the_step_with_validation_naming_the_path(stack: Stack) -> None:
    definition = {
        "name": "broken-ref",
        "steps": [
            {"id": "a", "agent": "echo", "input": {"n": 1}},
            {"id": "b", "agent": "echo", "depends_on": ["a"], "input": {"x": "{{ steps.a.output.echo.missing }}"}},
        ],
    }
    mission = await finished(stack, await submit(stack, definition, {}))
    assert mission["status"] == "failed"
    steps = {step["key"]: step for step in mission["steps"]}
    assert steps["b"]["status"] == "failed" and steps["b"]["attempt"] == 0  # never dispatched
    assert steps["b"]["error"]["type"] == "VALIDATION"
    assert "steps.a.output.echo.missing" in steps["b"]["error"]["message"]
    assert mission["error"]["step"] == "b"


async def test_a_lost_dispatch_is_published_again_and_runs_once(stack: Stack) -> None:
    """Simulates a crash between the dispatch commit and the publish: the message is gone from the
    stream while the step says `dispatched`. The engine publishes it again; the attempt runs once."""
    mission_id = await submit(stack, {"name": "one", "steps": [{"id": "a", "agent": "echo", "input": {}}]}, {})
    await finished(stack, mission_id)
    # Rewind the finished step to a dispatched attempt 2 whose message was never published.
    step = (await db_fetch(stack.settings, "SELECT id FROM steps WHERE key = 'a'"))[0]
    await db_fetch(
        stack.settings,
        "UPDATE steps SET status = 'dispatched', attempt = 2, output = NULL, "
        "dispatched_at = now() - interval '1 hour' WHERE id = $1",
        step["id"],
    )
    await db_fetch(
        stack.settings,
        "UPDATE missions SET status = 'running', finished_at = NULL, output = NULL WHERE id = $1",
        uuid.UUID(mission_id),
    )
    mission = await finished(stack, mission_id)
    assert mission["status"] == "succeeded"
    rows = await db_fetch(
        stack.settings, "SELECT attempt FROM agent_results WHERE step_id = $1 ORDER BY attempt", step["id"]
    )
    assert [row["attempt"] for row in rows] == [1, 2]  # exactly one result per attempt
    events = await db_fetch(stack.settings, "SELECT type FROM timeline_events WHERE type = 'step.redispatched'")
    assert len(events) == 1


async def test_a_lost_dispatch_found_overdue_is_published_again_not_timed_out(
    engine_parts: Any,
) -> None:
    """Whichever of the housekeeper's passes sees a lost dispatch first, it is published again: the
    overdue pass settles an attempt only from a stored result (or once it has started running)."""
    settings, sessionmaker, bus = engine_parts
    mission_id = await create_test_mission(engine_parts, {"name": "one", "steps": [{"id": "a", "agent": "echo"}]})
    (step,) = await db_fetch(
        settings,
        "UPDATE steps SET dispatched_at = now() - interval '1 hour' WHERE mission_id = $1 "
        "RETURNING id, status, attempt",
        mission_id,
    )
    assert (step["status"], step["attempt"]) == ("dispatched", 1)
    housekeeper = Housekeeper(settings, sessionmaker, bus)
    await housekeeper.settle_overdue_attempts()  # the overdue pass runs before the republish pass sees it
    (after,) = await db_fetch(settings, "SELECT status, attempt FROM steps WHERE id = $1", step["id"])
    assert (after["status"], after["attempt"]) == ("dispatched", 1)
    await housekeeper.republish_stale_dispatches()
    events = await db_fetch(
        settings,
        "SELECT type FROM timeline_events WHERE mission_id = $1 AND type LIKE 'step.%' ORDER BY id",
        mission_id,
    )
    assert [e["type"] for e in events][-1] == "step.redispatched"
    assert not [e for e in events if e["type"] == "step.retry_wait"]


async def test_an_undecodable_work_item_is_dead_lettered(stack: Stack) -> None:
    subject = stack.settings.subject("coo.work.echo")
    nc = await nats.connect(stack.settings.nats_url or "")
    try:
        await nc.jetstream().publish(subject, b"{this is not a work item", headers={"Nats-Msg-Id": "garbage-1"})
    finally:
        await nc.close()

    async def dead() -> list[Any]:
        return await db_fetch(stack.settings, "SELECT subject, payload, error, error_type FROM dead_letters")

    (row,) = await wait_for(dead, timeout_s=20, what="a dead letter")
    assert row["subject"] == subject
    assert row["payload"] == b"{this is not a work item"
    assert row["error_type"] == "VALIDATION" and "cannot decode work item" in row["error"]


async def test_an_undecodable_result_is_dead_lettered(stack: Stack) -> None:
    nc = await nats.connect(stack.settings.nats_url or "")
    try:
        payload = orjson.dumps({"kind": "work_result", "schema_version": 99})
        await nc.jetstream().publish(stack.settings.subject("coo.results"), payload)
    finally:
        await nc.close()

    async def dead() -> list[Any]:
        return await db_fetch(stack.settings, "SELECT error, error_type FROM dead_letters")

    (row,) = await wait_for(dead, timeout_s=20, what="a dead letter")
    assert row["error_type"] == "VALIDATION" and "cannot decode result" in row["error"]


async def _rewind(stack: Stack, mission_id: str, *, status: str, attempt: int) -> Any:
    step = (await db_fetch(stack.settings, "SELECT id FROM steps WHERE key = 'a'"))[0]
    await db_fetch(
        stack.settings,
        "UPDATE steps SET status = $2, attempt = $3, output = NULL, timeout_s = 1, "
        "dispatched_at = now() - interval '1 hour' WHERE id = $1",
        step["id"],
        status,
        attempt,
    )
    await db_fetch(
        stack.settings,
        "UPDATE missions SET status = 'running', finished_at = NULL, output = NULL WHERE id = $1",
        uuid.UUID(mission_id),
    )
    return step["id"]


async def test_an_attempt_whose_result_was_lost_is_settled_from_its_stored_result(stack: Stack) -> None:
    mission_id = await submit(stack, {"name": "one", "steps": [{"id": "a", "agent": "echo", "input": {"v": 1}}]}, {})
    await finished(stack, mission_id)
    step_id = await _rewind(stack, mission_id, status="running", attempt=1)  # its WorkResult never arrived
    mission = await finished(stack, mission_id)
    assert mission["status"] == "succeeded" and mission["output"] == {"a": {"echo": {"v": 1}}}
    rows = await db_fetch(stack.settings, "SELECT attempt FROM agent_results WHERE step_id = $1", step_id)
    assert [row["attempt"] for row in rows] == [1]  # settled from the stored result, not run again


async def test_an_attempt_with_no_outcome_times_out_and_is_retried(stack: Stack) -> None:
    mission_id = await submit(stack, {"name": "one", "steps": [{"id": "a", "agent": "echo", "input": {"v": 1}}]}, {})
    await finished(stack, mission_id)
    step_id = await _rewind(stack, mission_id, status="running", attempt=2)  # attempt 2 vanished with its worker
    mission = await finished(stack, mission_id)
    assert mission["status"] == "succeeded"
    rows = await db_fetch(stack.settings, "SELECT attempt FROM agent_results WHERE step_id = $1 ORDER BY 1", step_id)
    assert [row["attempt"] for row in rows] == [1, 3]
    waits = await db_fetch(stack.settings, "SELECT data FROM timeline_events WHERE type = 'step.retry_wait'")
    assert len(waits) == 1 and '"TIMEOUT"' in waits[0]["data"]


async def test_an_agent_with_an_unknown_tool_fails_its_step_with_validation(stack: Stack) -> None:
    async with stack.client() as client:
        put = await client.put("/v1/agents/echo", json={"model": "offline", "tools": ["teleport"]})
    assert put.status_code == 200 and put.json()["version"] == 2
    mission = await finished(stack, await submit(stack, {"name": "one", "steps": [{"id": "a", "agent": "echo"}]}, {}))
    assert mission["status"] == "failed"
    (step,) = mission["steps"]
    assert step["attempt"] == 1 and step["error"]["type"] == "VALIDATION"
    assert "unknown tools ['teleport']" in step["error"]["message"]
