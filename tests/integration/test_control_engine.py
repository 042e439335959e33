"""CONTROL and budgets at the engine level (real Postgres and NATS, no worker): a redelivered
command is applied once, a manual pause does not let a mission spend past its budget, and a
budget that cannot be stored is refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from services.common.contracts import Control, ControlAction, WorkResult
from services.common.db.models import Mission, Step, TimelineEventRow, Workflow
from services.orchestrator.engine.control import apply_control, check_control
from services.orchestrator.engine.dag import parse_definition
from services.orchestrator.engine.missions import create_mission
from services.orchestrator.engine.results import apply_result
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import InvalidInput, as_api_error
from tests.conftest import Stack

CHAIN = {
    "name": "pair",
    "steps": [
        {"id": "one", "agent": "echo", "input": {}},
        {"id": "two", "agent": "echo", "depends_on": ["one"], "input": {}},
    ],
}


async def _mission(parts: Any, definition: dict[str, Any] = CHAIN, **budget: Any) -> uuid.UUID:
    """A mission of ``definition`` (registered as a new workflow version), created by the engine."""
    settings, sessionmaker, bus = parts
    parsed = parse_definition(definition, known_agents={"echo"})
    async with UnitOfWork(sessionmaker, bus) as uow:
        version = (
            await uow.session.scalar(select(func.max(Workflow.version)).where(Workflow.name == parsed.name))
        ) or 0
        workflow = Workflow(
            name=parsed.name, version=version + 1, definition=parsed.model_dump(mode="json", by_alias=True)
        )
        uow.session.add(workflow)
        await uow.session.flush()
        mission = await create_mission(
            uow,
            settings,
            workflow,
            parsed,
            mission_input={},
            priority=0,
            caller="t",
            budget_usd=None,
            budget_tokens=budget.get("budget_tokens"),
            idempotency_key=None,
            traceparent=None,
        )
        return mission.id


async def _control(parts: Any, control: Control, control_id: str) -> Any:
    settings, sessionmaker, bus = parts
    async with UnitOfWork(sessionmaker, bus) as uow:
        return await apply_control(uow, settings, control, control_id)


async def _state(parts: Any, mission_id: uuid.UUID) -> tuple[Mission, list[Step], list[TimelineEventRow]]:
    _, sessionmaker, _ = parts
    async with sessionmaker() as session:
        mission = await session.get_one(Mission, mission_id)
        steps = list((await session.execute(select(Step).where(Step.mission_id == mission_id))).scalars())
        events = list(
            (
                await session.execute(
                    select(TimelineEventRow)
                    .where(TimelineEventRow.mission_id == mission_id)
                    .order_by(TimelineEventRow.id)
                )
            ).scalars()
        )
    return mission, steps, events


async def test_a_redelivered_command_is_applied_once(engine_parts: Any) -> None:
    mission_id = await _mission(engine_parts)
    pause = Control(mission_id=mission_id, action=ControlAction.PAUSE, actor="ops", reason="db maintenance")
    first = await _control(engine_parts, pause, "c1")
    resume = Control(mission_id=mission_id, action=ControlAction.RESUME, actor="ops")
    assert (await _control(engine_parts, resume, "c2")).applied
    again = await _control(engine_parts, pause, "c1")  # the first pause, delivered again
    mission, _, events = await _state(engine_parts, mission_id)
    assert first.applied and again.message == "already handled"
    assert mission.status == "running"
    outcomes = [e for e in events if e.type.startswith("control.") and e.data.get("control_id") == "c1"]
    assert [e.type for e in outcomes] == ["control.applied"]
    paused = next(e for e in events if e.type == "mission.paused")
    assert paused.data["note"] == "db maintenance" and paused.data["reason"] == "manual"


async def test_a_manual_pause_does_not_let_a_mission_run_past_its_budget(engine_parts: Any) -> None:
    settings, sessionmaker, bus = engine_parts
    mission_id = await _mission(engine_parts, budget_tokens=100)
    await _control(engine_parts, Control(mission_id=mission_id, action=ControlAction.PAUSE), "p")
    _, steps, _ = await _state(engine_parts, mission_id)
    one = next(s for s in steps if s.key == "one")
    assert one.status == "dispatched"
    result = WorkResult(
        mission_id=mission_id,
        step_id=one.id,
        attempt=one.attempt,
        result_id=None,
        success=True,
        output={},
        tokens_in=500,
    )
    async with UnitOfWork(sessionmaker, bus) as uow:
        await apply_result(uow, settings, result)
    mission, steps, events = await _state(engine_parts, mission_id)
    assert mission.status == "paused" and mission.pause_reason == "budget_exceeded"
    assert "budget.exceeded" in [e.type for e in events]
    refused = await _control(engine_parts, Control(mission_id=mission_id, action=ControlAction.RESUME), "r")
    assert not refused.applied and "still over budget" in (refused.message or "")
    assert next(s for s in steps if s.key == "two").status == "pending"


async def test_a_budget_too_large_to_store_is_refused(engine_parts: Any) -> None:
    mission_id = await _mission(engine_parts, budget_tokens=2**62)
    await _control(engine_parts, Control(mission_id=mission_id, action=ControlAction.PAUSE), "p")
    mission, steps, _ = await _state(engine_parts, mission_id)
    huge = Control(mission_id=mission_id, action=ControlAction.RESUME, add_budget_tokens=2**62)
    with pytest.raises(InvalidInput) as refused:
        check_control(mission, steps, huge)
    assert as_api_error(refused.value).status_code == 422 and "largest storable" in refused.value.message


async def test_out_of_range_event_ids_get_422(stack: Stack) -> None:
    async with stack.client() as client:
        workflow = {"name": "one", "steps": [{"id": "e", "agent": "echo", "input": {}}]}
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        mid = (await client.post("/v1/missions", json={"workflow": "one"})).json()["id"]
        timeline = await client.get(f"/v1/missions/{mid}/timeline", params={"after": 10**20})
        events = await client.get(f"/v1/missions/{mid}/events", params={"after": 10**20})
        header = await client.get(f"/v1/missions/{mid}/events", headers={"Last-Event-ID": str(10**20)})
    assert timeline.status_code == events.status_code == header.status_code == 422
