"""Admission of a batch of new missions: the ones created in a unit of work compete with the
stored queue by the same order (priority, then arrival), and those admitted are inserted running,
with their first steps dispatched."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from services.common.db.models import Mission, Step, TimelineEventRow, Workflow
from services.orchestrator.engine.dag import parse_definition
from services.orchestrator.engine.missions import create_mission
from services.orchestrator.engine.unit import UnitOfWork


async def test_new_missions_are_admitted_with_the_stored_queue_by_priority_then_arrival(engine_parts: Any) -> None:
    settings, sessionmaker, bus = engine_parts
    parsed = parse_definition(
        {"name": f"a{uuid.uuid4().hex[:12]}", "steps": [{"id": "s", "agent": "echo", "input": {"x": 1}}]},
        known_agents={"echo"},
    )

    async def create(uow: UnitOfWork, workflow: Workflow, priority: int, room: int) -> uuid.UUID:
        mission = await create_mission(
            uow,
            settings.model_copy(update={"max_active_missions": room}),
            workflow,
            parsed,
            mission_input={"p": priority},
            priority=priority,
            caller="admission-test",
            budget_usd=None,
            budget_tokens=None,
            idempotency_key=None,
            traceparent=None,
        )
        return mission.id

    async with UnitOfWork(sessionmaker, bus) as uow:  # room for one: it runs
        workflow = Workflow(name=parsed.name, version=1, definition=parsed.model_dump(mode="json", by_alias=True))
        uow.session.add(workflow)
        await uow.session.flush()
        running = await create(uow, workflow, 0, room=1)
    async with UnitOfWork(sessionmaker, bus) as uow:  # no room left: this one waits in the stored queue
        stored = await create(uow, workflow, 7, room=1)

    async with UnitOfWork(sessionmaker, bus) as uow:  # room for four: one runs, so three more start
        new = [await create(uow, workflow, priority, room=4) for priority in (0, 5, 0, 9, 1, 5)]

    async with sessionmaker() as session:
        ids = [running, stored, *new]
        missions = {m.id: m for m in (await session.execute(select(Mission).where(Mission.id.in_(ids)))).scalars()}
        rows = (await session.execute(select(Step).where(Step.mission_id.in_(ids)))).scalars()
        steps = {step.mission_id: step for step in rows}
        events = list(
            (
                await session.execute(
                    select(TimelineEventRow.mission_id, TimelineEventRow.type)
                    .where(TimelineEventRow.mission_id.in_(ids))
                    .order_by(TimelineEventRow.id)
                )
            ).all()
        )

    started = {running, stored, new[3], new[1]}  # priority 9, the stored 7, then the first of the two 5s
    assert {mission_id for mission_id, m in missions.items() if m.status == "running"} == started
    assert {mission_id for mission_id, m in missions.items() if m.status == "queued"} == set(ids) - started
    for mission_id in started:
        assert steps[mission_id].status == "dispatched" and steps[mission_id].attempt == 1
        assert missions[mission_id].started_at is not None
    for mission_id in set(ids) - started:
        assert steps[mission_id].status == "pending" and steps[mission_id].attempt == 0
    for mission_id in new:  # every new mission's history starts with its submission
        kinds = [kind for owner, kind in events if owner == mission_id]
        assert kinds[0] == "mission.submitted"
        if mission_id in started:
            assert kinds[1:] == ["mission.running", "step.ready", "step.dispatched"]
        else:
            assert kinds[1:] == []
