"""``/v1/missions``: submit, list and read missions, their timeline and every attempt's result."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Response

from services.common.http import error_responses
from services.common.status import MissionStatus, TriggerType
from services.orchestrator.api.deps import (
    BODY_ERRORS,
    KEY_ERRORS,
    SCOPE_ERRORS,
    CallerDep,
    OperatorDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.commands import missions as commands
from services.orchestrator.commands.missions import MissionAccepted, MissionCreate
from services.orchestrator.reads.missions import (
    AgentResultOut,
    MissionOut,
    MissionPage,
    TimelineEventOut,
    find_missions,
    read_mission_json,
    read_step_results,
    read_timeline,
)
from services.orchestrator.reads.paging import CURSOR_DESCRIPTION, CURSOR_PATTERN

router = APIRouter(
    prefix="/v1/missions",
    tags=["missions"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)
_NO_MISSION = error_responses(404, described={404: "No such mission"})


@router.post(
    "",
    status_code=202,
    summary="Submit a mission",
    responses=responses(
        SCOPE_ERRORS,
        BODY_ERRORS,
        error_responses(
            404,
            409,
            described={
                404: "No such workflow (or version)",
                409: "The idempotency key was used for a different request",
            },
        ),
    ),
)
async def submit_mission(body: MissionCreate, state: StateDep, caller: OperatorDep) -> MissionAccepted:
    accepted = await commands.submit_mission(body, state, caller)
    note_target("mission", accepted.id)  # the audit row names the mission made
    return accepted


@router.post(
    "/{mission_id}/rerun",
    status_code=202,
    summary="Run a mission again: its workflow version, input, priority and budgets",
    responses=responses(SCOPE_ERRORS, _NO_MISSION),
)
async def rerun_mission(mission_id: uuid.UUID, state: StateDep, caller: OperatorDep) -> MissionAccepted:
    accepted = await commands.rerun_mission(state, mission_id, caller)
    note_target("mission", accepted.id)
    return accepted


@router.get("", summary="List missions, newest first (cursor paging)")
async def list_missions(
    state: StateDep,
    _: CallerDep,
    status: MissionStatus | None = None,
    workflow: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, pattern=CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
    trigger: TriggerType | None = Query(default=None, description="Only missions started this way"),
    trigger_name: str | None = Query(
        default=None, max_length=100, description="Only those of this schedule or trigger"
    ),
) -> MissionPage:
    return await find_missions(
        state,
        status=status,
        workflow=workflow,
        limit=limit,
        cursor=cursor,
        trigger=trigger,
        trigger_name=trigger_name,
    )


@router.get(
    "/{mission_id}",
    summary="A mission with its steps, spend and queue position",
    response_model=MissionOut,
    responses=_NO_MISSION,
)
async def get_mission(mission_id: uuid.UUID, state: StateDep, _: CallerDep) -> Response:
    # Already the JSON that MissionOut gives, written once: no validation of it again, no second encoding.
    return Response(await read_mission_json(state, mission_id), media_type="application/json")


@router.get("/{mission_id}/timeline", summary="The mission's timeline, oldest first", responses=_NO_MISSION)
async def get_mission_timeline(
    mission_id: uuid.UUID,
    state: StateDep,
    _: CallerDep,
    after: int = Query(default=0, ge=0, le=2**63 - 1, description="Only events with a larger id"),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> list[TimelineEventOut]:
    return await read_timeline(state, mission_id, after=after, limit=limit)


@router.get(
    "/{mission_id}/steps/{key}/results",
    summary="Every attempt's full result, oldest first",
    responses=error_responses(404, described={404: "No such mission, or no such step in it"}),
)
async def get_step_results(mission_id: uuid.UUID, key: str, state: StateDep, _: CallerDep) -> list[AgentResultOut]:
    return await read_step_results(state, mission_id, key)
