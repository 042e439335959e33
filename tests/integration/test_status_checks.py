"""The database refuses a status COO does not know, in every status column (CHECK constraints)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from services.common.db.models import Approval, Mission, SandboxRun, Step
from services.common.status import MissionStatus, RunStatus, StepStatus
from tests.integration.test_control_engine import _mission as create_test_mission


async def _refused(parts: Any, statement: Any) -> str:
    _, sessionmaker, _ = parts
    async with sessionmaker() as session:
        with pytest.raises(IntegrityError) as refused:
            async with session.begin():
                await session.execute(statement)
    return str(refused.value)


async def test_a_status_outside_the_shared_enums_is_refused_by_the_database(engine_parts: Any) -> None:
    _, sessionmaker, _ = engine_parts
    mission_id = await create_test_mission(engine_parts)
    async with sessionmaker() as session:
        step = (await session.execute(select(Step).where(Step.mission_id == mission_id).limit(1))).scalar_one()

    bad_mission = update(Mission).where(Mission.id == mission_id).values(status="sleeping")
    assert "ck_missions_status" in await _refused(engine_parts, bad_mission)
    bad_step = update(Step).where(Step.id == step.id).values(status="napping")
    assert "ck_steps_status" in await _refused(engine_parts, bad_step)
    bad_run = SandboxRun.__table__.insert().values(id=uuid.uuid4(), argv=["true"], status="lost")
    assert "ck_sandbox_runs_status" in await _refused(engine_parts, bad_run)
    bad_approval = Approval.__table__.insert().values(
        id=uuid.uuid4(), mission_id=mission_id, step_id=step.id, attempt=1, status="maybe"
    )
    assert "ck_approvals_status" in await _refused(engine_parts, bad_approval)

    async with sessionmaker() as session, session.begin():  # every known status is accepted
        for status in MissionStatus:
            await session.execute(update(Mission).where(Mission.id == mission_id).values(status=status))
        for step_status in StepStatus:
            await session.execute(update(Step).where(Step.id == step.id).values(status=step_status))
        for run_status in RunStatus:
            await session.execute(
                SandboxRun.__table__.insert().values(id=uuid.uuid4(), argv=["true"], status=run_status)
            )
        for attempt, decision in enumerate(("pending", "approved", "rejected", "expired"), start=1):
            await session.execute(
                Approval.__table__.insert().values(
                    id=uuid.uuid4(), mission_id=mission_id, step_id=step.id, attempt=attempt, status=decision
                )
            )
