"""Reads of missions: the list, one mission with its steps, its timeline and every attempt's result."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import AgentResult, Mission, Step, TimelineEventRow
from services.orchestrator.engine.admission import queue_position
from services.orchestrator.engine.scheduler import definition_for
from services.orchestrator.errors import NotFound
from services.orchestrator.reads.paging import after_cursor, encode_cursor
from services.orchestrator.state import OrchestratorState


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key: str
    agent: str
    status: str
    attempt: int
    max_attempts: int
    depends_on: list[str]
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class MissionOut(BaseModel):
    id: uuid.UUID
    workflow: str
    workflow_version: int
    status: str
    pause_reason: str | None
    priority: int
    queue_position: int | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    budget_usd: Decimal | None
    budget_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut] | None = None


class MissionPage(BaseModel):
    items: list[MissionOut]
    next_cursor: str | None


class TimelineEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: datetime
    type: str
    step_key: str | None
    data: dict[str, Any]
    trace_id: str | None


class AgentResultOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    attempt: int
    agent: str
    success: bool
    model: str
    provider: str
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    tool_calls: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal | None
    duration_ms: int
    verification: dict[str, Any] | None
    trace_id: str | None
    worker: str
    started_at: datetime
    created_at: datetime


def mission_out(mission: Mission, position: int | None, steps: list[Step] | None = None) -> MissionOut:
    return MissionOut(
        id=mission.id,
        workflow=mission.workflow_name,
        workflow_version=mission.workflow_version,
        status=mission.status,
        pause_reason=mission.pause_reason,
        priority=mission.priority,
        queue_position=position,
        input=mission.input,
        output=mission.output,
        error=mission.error,
        budget_usd=mission.budget_usd,
        budget_tokens=mission.budget_tokens,
        spent_usd=mission.spent_usd,
        spent_tokens=mission.spent_tokens,
        idempotency_key=mission.idempotency_key,
        created_at=mission.created_at,
        started_at=mission.started_at,
        finished_at=mission.finished_at,
        steps=None if steps is None else [StepOut.model_validate(s) for s in steps],
    )


async def find_missions(
    state: OrchestratorState, *, status: str | None, workflow: str | None, limit: int, cursor: str | None
) -> MissionPage:
    """Missions newest first, filtered; the REST list and the console share it."""
    query = select(Mission).order_by(Mission.created_at.desc(), Mission.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Mission.status == status)
    if workflow is not None:
        query = query.where(Mission.workflow_name == workflow)
    if cursor is not None:
        query = query.where(after_cursor(Mission.created_at, Mission.id, cursor))
    async with state.reads() as session:
        rows = list((await session.execute(query)).scalars())
        page = rows[:limit]
        items = [mission_out(m, await queue_position(session, m)) for m in page]
    return MissionPage(
        items=items, next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    )


async def get_mission(session: AsyncSession, mission_id: uuid.UUID) -> Mission:
    mission = await session.get(Mission, mission_id)
    if mission is None:
        raise NotFound(f"mission {mission_id} not found", field="id")
    return mission


# A mission and its steps in one statement (one snapshot, one round trip), built once.
_MISSION_WITH_STEPS = (
    select(Mission, Step).outerjoin(Step, Step.mission_id == Mission.id).where(Mission.id == bindparam("mission_id"))
)


async def read_mission(state: OrchestratorState, mission_id: uuid.UUID) -> MissionOut:
    """A mission with its steps in definition order (404 when unknown)."""
    async with state.reads() as session:
        rows = (await session.execute(_MISSION_WITH_STEPS, {"mission_id": mission_id})).all()
        if not rows:
            raise NotFound(f"mission {mission_id} not found", field="id")
        mission: Mission = rows[0][0]
        steps: list[Step] = [step for _, step in rows if step is not None]
        definition = await definition_for(session, mission.workflow_id)
        order = {spec.id: i for i, spec in enumerate(definition.steps)}
        steps.sort(key=lambda s: order.get(s.key, len(order)))
        return mission_out(mission, await queue_position(session, mission), steps)


async def read_timeline(
    state: OrchestratorState, mission_id: uuid.UUID, *, after: int = 0, limit: int = 1000
) -> list[TimelineEventOut]:
    """The mission's timeline events after ``after``, oldest first (404 when the mission is unknown)."""
    async with state.reads() as session:
        await get_mission(session, mission_id)
        rows = await session.execute(
            select(TimelineEventRow)
            .where(TimelineEventRow.mission_id == mission_id, TimelineEventRow.id > after)
            .order_by(TimelineEventRow.id)
            .limit(limit)
        )
        return [TimelineEventOut.model_validate(r) for r in rows.scalars()]


async def read_step_results(state: OrchestratorState, mission_id: uuid.UUID, key: str) -> list[AgentResultOut]:
    """Every attempt's full result of one step, oldest first (404 for an unknown mission or step)."""
    async with state.reads() as session:
        await get_mission(session, mission_id)
        step = (
            await session.execute(select(Step).where(Step.mission_id == mission_id, Step.key == key))
        ).scalar_one_or_none()
        if step is None:
            raise NotFound(f"step '{key}' not found in mission {mission_id}", field="key")
        rows = await session.execute(
            select(AgentResult).where(AgentResult.step_id == step.id).order_by(AgentResult.attempt)
        )
        return [AgentResultOut.model_validate(r) for r in rows.scalars()]


async def require_mission(state: OrchestratorState, mission_id: uuid.UUID) -> None:
    """``NotFound`` unless the mission exists."""
    async with state.sessionmaker() as session:
        await get_mission(session, mission_id)


EVENTS_PAGE = 5000


def _event_dict(row: TimelineEventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "mission_id": str(row.mission_id),
        "ts": row.ts.isoformat(),
        "type": row.type,
        "step_key": row.step_key,
        "data": row.data,
        "trace_id": row.trace_id,
    }


async def events_after(state: OrchestratorState, mission_id: uuid.UUID, after: int) -> tuple[list[dict[str, Any]], str]:
    """The events after ``after`` and the mission's status, the status read *first*: a final
    status seen here means every event of the mission is already committed and in this read."""
    async with state.sessionmaker() as session:
        status = await session.scalar(select(Mission.status).where(Mission.id == mission_id))
        rows = await session.execute(
            select(TimelineEventRow)
            .where(TimelineEventRow.mission_id == mission_id, TimelineEventRow.id > after)
            .order_by(TimelineEventRow.id)
            .limit(EVENTS_PAGE)
        )
        events = [_event_dict(r) for r in rows.scalars()]
    return events, str(status)
