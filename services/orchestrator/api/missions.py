"""``/v1/missions``: submit, list and read missions, their timeline and every attempt's result."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from services.common.db.models import AgentResult, Mission, Step, TimelineEventRow
from services.common.http import ApiError
from services.common.scrub import scrub
from services.common.status import MissionStatus
from services.orchestrator.api.deps import CallerDep, OperatorDep, StateDep
from services.orchestrator.api.paging import after_cursor, encode_cursor
from services.orchestrator.api.storable import storable_params
from services.orchestrator.api.workflows import find_workflow_ref
from services.orchestrator.audit import note_target
from services.orchestrator.auth import Caller
from services.orchestrator.engine.admission import queue_position
from services.orchestrator.engine.missions import create_mission
from services.orchestrator.engine.scheduler import definition_for
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable

router = APIRouter(prefix="/v1/missions", tags=["missions"], dependencies=[Depends(storable_params)])


class MissionCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: str = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1, le=2_147_483_647)
    input: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first when missions queue.")
    budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=8)
    budget_tokens: int | None = Field(default=None, ge=0, le=2**62)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class MissionAccepted(BaseModel):
    id: uuid.UUID
    status: str
    queue_position: int | None


class StepOut(BaseModel):
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
    id: int
    ts: datetime
    type: str
    step_key: str | None
    data: dict[str, Any]
    trace_id: str | None


class AgentResultOut(BaseModel):
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


def _mission_out(mission: Mission, position: int | None, steps: list[Step] | None = None) -> MissionOut:
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
        steps=None
        if steps is None
        else [
            StepOut(
                key=s.key,
                agent=s.agent,
                status=s.status,
                attempt=s.attempt,
                max_attempts=s.max_attempts,
                depends_on=list(s.depends_on),
                input=s.input,
                output=s.output,
                error=s.error,
                next_attempt_at=s.next_attempt_at,
                dispatched_at=s.dispatched_at,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in steps
        ],
    )


@router.post(
    "",
    status_code=202,
    summary="Submit a mission",
    responses={409: {"description": "The idempotency key was used for a different request"}},
)
async def submit_mission(body: MissionCreate, state: StateDep, caller: OperatorDep) -> MissionAccepted:
    accepted = await _submit(body, state, caller)
    note_target("mission", accepted.id)  # the audit row names the mission made
    return accepted


async def _submit(body: MissionCreate, state: OrchestratorState, caller: Caller) -> MissionAccepted:
    require_storable(body.model_dump(mode="json"), "body")
    if body.idempotency_key is not None:
        replay = await _replay(state, caller.name, body)
        if replay is not None:
            return replay

    async def create(uow: UnitOfWork) -> Mission | ApiError:
        # A bad request is answered, not raised: it never costs the submissions it came with.
        try:
            workflow = await find_workflow_ref(uow.session, body.workflow, body.version)
            definition = await definition_for(uow.session, workflow.id)
            _check_input(definition.input_schema, body.input)
        except ApiError as refused:
            return refused
        return await create_mission(
            uow,
            state.settings,
            workflow,
            definition,
            mission_input=body.input,
            priority=body.priority,
            caller=caller.name,
            budget_usd=body.budget_usd,
            budget_tokens=body.budget_tokens,
            idempotency_key=body.idempotency_key,
            traceparent=None,
        )

    try:
        mission = await state.submissions.run(create)  # committed with the submissions that came with it
        if isinstance(mission, ApiError):
            raise mission
        if mission.status != MissionStatus.QUEUED:
            return MissionAccepted(id=mission.id, status=mission.status, queue_position=None)
        async with state.reads() as session:  # its place now (status and position from one read)
            current = await _get_mission(session, mission.id)
            position = await queue_position(session, current)
        return MissionAccepted(id=current.id, status=current.status, queue_position=position)
    except IntegrityError:
        if body.idempotency_key is None:
            raise
        replay = await _replay(state, caller.name, body)  # lost a race on the same key
        if replay is None:
            raise
        return replay


async def _replay(state: OrchestratorState, caller: str, body: MissionCreate) -> MissionAccepted | None:
    """The mission an idempotency key already made, or 409 when the key came with another request."""
    assert body.idempotency_key is not None
    async with state.sessionmaker() as session:
        existing = (
            await session.execute(
                select(Mission).where(Mission.caller == caller, Mission.idempotency_key == body.idempotency_key)
            )
        ).scalar_one_or_none()
        if existing is None:
            return None
        same = (
            existing.workflow_name == body.workflow
            and (body.version is None or existing.workflow_version == body.version)
            and existing.input == scrub(body.input)
            and existing.priority == body.priority
        )
        if not same:
            raise ApiError(
                409,
                "conflict",
                f"idempotency_key '{body.idempotency_key}' was used for another request (mission {existing.id})",
                field="idempotency_key",
            )
        position = await queue_position(session, existing)
        return MissionAccepted(id=existing.id, status=existing.status, queue_position=position)


def _check_input(schema: dict[str, Any] | None, mission_input: dict[str, Any]) -> None:
    """The workflow's ``input_schema``, if it has one: 422 naming the first bad field."""
    if schema is None:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(mission_input), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "input" + "".join(f".{part}" for part in first.absolute_path)
        raise ApiError(422, "validation", f"{where}: {first.message}", field=where)


@router.get("", summary="List missions, newest first (cursor paging)")
async def list_missions(
    state: StateDep,
    _: CallerDep,
    status: MissionStatus | None = None,
    workflow: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = None,
) -> MissionPage:
    return await find_missions(state, status=status, workflow=workflow, limit=limit, cursor=cursor)


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
        items = [_mission_out(m, await queue_position(session, m)) for m in page]
    return MissionPage(
        items=items, next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    )


async def _get_mission(session: Any, mission_id: uuid.UUID) -> Mission:
    mission = await session.get(Mission, mission_id)
    if mission is None:
        raise ApiError(404, "not_found", f"mission {mission_id} not found", field="id")
    assert isinstance(mission, Mission)
    return mission


@router.get("/{mission_id}", summary="A mission with its steps, spend and queue position")
async def get_mission(mission_id: uuid.UUID, state: StateDep, _: CallerDep) -> MissionOut:
    return await read_mission(state, mission_id)


# A mission and its steps in one statement (one snapshot, one round trip), built once.
_MISSION_WITH_STEPS = (
    select(Mission, Step).outerjoin(Step, Step.mission_id == Mission.id).where(Mission.id == bindparam("mission_id"))
)


async def read_mission(state: OrchestratorState, mission_id: uuid.UUID) -> MissionOut:
    """A mission with its steps in definition order (404 when unknown)."""
    async with state.reads() as session:
        rows = (await session.execute(_MISSION_WITH_STEPS, {"mission_id": mission_id})).all()
        if not rows:
            raise ApiError(404, "not_found", f"mission {mission_id} not found", field="id")
        mission: Mission = rows[0][0]
        steps: list[Step] = [step for _, step in rows if step is not None]
        definition = await definition_for(session, mission.workflow_id)
        order = {spec.id: i for i, spec in enumerate(definition.steps)}
        steps.sort(key=lambda s: order.get(s.key, len(order)))
        return _mission_out(mission, await queue_position(session, mission), steps)


@router.get("/{mission_id}/timeline", summary="The mission's timeline, oldest first")
async def get_timeline(
    mission_id: uuid.UUID,
    state: StateDep,
    _: CallerDep,
    after: int = Query(default=0, ge=0, le=2**63 - 1, description="Only events with a larger id"),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> list[TimelineEventOut]:
    return await read_timeline(state, mission_id, after=after, limit=limit)


async def read_timeline(
    state: OrchestratorState, mission_id: uuid.UUID, *, after: int = 0, limit: int = 1000
) -> list[TimelineEventOut]:
    """The mission's timeline events after ``after``, oldest first (404 when the mission is unknown)."""
    async with state.reads() as session:
        await _get_mission(session, mission_id)
        rows = await session.execute(
            select(TimelineEventRow)
            .where(TimelineEventRow.mission_id == mission_id, TimelineEventRow.id > after)
            .order_by(TimelineEventRow.id)
            .limit(limit)
        )
        return [
            TimelineEventOut(id=r.id, ts=r.ts, type=r.type, step_key=r.step_key, data=r.data, trace_id=r.trace_id)
            for r in rows.scalars()
        ]


@router.get("/{mission_id}/steps/{key}/results", summary="Every attempt's full result, oldest first")
async def get_step_results(mission_id: uuid.UUID, key: str, state: StateDep, _: CallerDep) -> list[AgentResultOut]:
    return await read_step_results(state, mission_id, key)


async def read_step_results(state: OrchestratorState, mission_id: uuid.UUID, key: str) -> list[AgentResultOut]:
    """Every attempt's full result of one step, oldest first (404 for an unknown mission or step)."""
    async with state.reads() as session:
        await _get_mission(session, mission_id)
        step = (
            await session.execute(select(Step).where(Step.mission_id == mission_id, Step.key == key))
        ).scalar_one_or_none()
        if step is None:
            raise ApiError(404, "not_found", f"step '{key}' not found in mission {mission_id}", field="key")
        rows = await session.execute(
            select(AgentResult).where(AgentResult.step_id == step.id).order_by(AgentResult.attempt)
        )
        return [AgentResultOut.model_validate(r, from_attributes=True) for r in rows.scalars()]
