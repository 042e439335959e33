"""Submitting a mission: checked against its workflow, committed with the submissions that come
with it, and answered with its place in the queue; the same idempotency key gives the same mission."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.common.db.models import Mission
from services.common.money import amount_schema
from services.common.scrub import scrub
from services.common.status import MissionStatus
from services.orchestrator.auth import Caller
from services.orchestrator.engine.admission import queue_position
from services.orchestrator.engine.missions import MissionSpec, start_mission
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import Conflict, OrchestratorError
from services.orchestrator.reads.missions import get_mission
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable


class MissionCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: str = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1, le=2_147_483_647)
    input: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first when missions queue.")
    budget_usd: Decimal | None = Field(
        default=None, ge=0, max_digits=18, decimal_places=8, json_schema_extra=amount_schema
    )
    budget_tokens: int | None = Field(default=None, ge=0, le=2**62)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class MissionAccepted(BaseModel):
    id: uuid.UUID
    status: str
    queue_position: int | None
    rerun_of: uuid.UUID | None = Field(default=None, description="The mission this one runs again, if a rerun")


async def submit_mission(body: MissionCreate, state: OrchestratorState, caller: Caller) -> MissionAccepted:
    """Submit ``body`` for ``caller``; raise ``NotFound`` / ``Conflict`` / ``InvalidInput`` when refused."""
    require_storable(body.model_dump(mode="json"), "body")
    if body.idempotency_key is not None:
        replay = await _replay(state, caller.name, body)
        if replay is not None:
            return replay

    spec = MissionSpec(
        workflow=body.workflow,
        version=body.version,
        input=body.input,
        caller=caller.name,
        priority=body.priority,
        budget_usd=body.budget_usd,
        budget_tokens=body.budget_tokens,
        idempotency_key=body.idempotency_key,
    )

    async def create(uow: UnitOfWork) -> Mission | OrchestratorError:
        # A bad request is answered, not raised: it never costs the submissions it came with.
        try:
            return await start_mission(uow, state.settings, spec)
        except OrchestratorError as refused:
            return refused

    try:
        return await _accepted(state, await state.submissions.run(create))
    except IntegrityError:
        if body.idempotency_key is None:
            raise
        replay = await _replay(state, caller.name, body)  # lost a race on the same key
        if replay is None:
            raise
        return replay


async def _accepted(state: OrchestratorState, made: Mission | OrchestratorError) -> MissionAccepted:
    """The answer for a mission just committed (with the submissions that came with it)."""
    if isinstance(made, OrchestratorError):
        raise made
    if made.status != MissionStatus.QUEUED:
        return MissionAccepted(id=made.id, status=made.status, queue_position=None, rerun_of=made.rerun_of)
    async with state.reads() as session:  # its place now (status and position from one read)
        current = await get_mission(session, made.id)
        position = await queue_position(session, current)
    return MissionAccepted(id=current.id, status=current.status, queue_position=position, rerun_of=current.rerun_of)


async def rerun_mission(state: OrchestratorState, mission_id: uuid.UUID, caller: Caller) -> MissionAccepted:
    """A new mission like ``mission_id``: its workflow version, its input as stored, its priority and
    budgets, started by ``caller`` and pointing back at it (``NotFound`` when unknown)."""
    async with state.reads() as session:
        original = await get_mission(session, mission_id)
    spec = MissionSpec(
        workflow=original.workflow_name,
        version=original.workflow_version,
        input=dict(original.input),
        caller=caller.name,
        priority=original.priority,
        budget_usd=original.budget_usd,
        budget_tokens=original.budget_tokens,
        rerun_of=original.id,
    )

    async def create(uow: UnitOfWork) -> Mission | OrchestratorError:
        try:
            return await start_mission(uow, state.settings, spec)
        except OrchestratorError as refused:
            return refused

    return await _accepted(state, await state.submissions.run(create))


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
            raise Conflict(
                f"idempotency_key '{body.idempotency_key}' was used for another request (mission {existing.id})",
                field="idempotency_key",
            )
        position = await queue_position(session, existing)
        return MissionAccepted(id=existing.id, status=existing.status, queue_position=position)
