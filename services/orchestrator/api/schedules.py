"""``/v1/schedules``: missions started at fire times (cron or interval), exactly once each."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from services.common.http import error_responses
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
from services.orchestrator.commands import schedules
from services.orchestrator.commands.schedules import BackfillRequest, FiresOut, ScheduleChange, ScheduleCreate
from services.orchestrator.reads.schedules import FIRES_SHOWN, ScheduleOut, read_schedule
from services.orchestrator.reads.schedules import list_schedules as read_schedules

router = APIRouter(
    prefix="/v1/schedules",
    tags=["schedules"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)

_NOT_FOUND = error_responses(404, described={404: "No schedule of that name"})
_CHANGE = responses(SCOPE_ERRORS, _NOT_FOUND)  # an operator's change of one schedule


@router.post(
    "",
    status_code=201,
    summary="Create a schedule; the answer lists its next five fire times",
    responses=responses(
        SCOPE_ERRORS, BODY_ERRORS, error_responses(409, described={409: "A schedule of that name exists"})
    ),
)
async def create_schedule(body: ScheduleCreate, state: StateDep, caller: OperatorDep) -> ScheduleOut:
    note_target("schedule", body.name)
    return await schedules.create_schedule(state, body, caller)


@router.get("", summary="Every schedule, with its next fire times and latest fires")
async def list_schedules(state: StateDep, _: CallerDep) -> list[ScheduleOut]:
    return await read_schedules(state)


@router.get("/{name}", summary="A schedule with its next fire times and latest fires", responses=_NOT_FOUND)
async def get_schedule(
    name: str,
    state: StateDep,
    _: CallerDep,
    fires: int = Query(default=FIRES_SHOWN, ge=0, le=1000, description="How many of the latest fire times to show"),
) -> ScheduleOut:
    return await read_schedule(state, name, fires)


@router.patch("/{name}", summary="Change a schedule (only the fields given)", responses=responses(_CHANGE, BODY_ERRORS))
async def update_schedule(name: str, body: ScheduleChange, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.change_schedule(state, name, body)


@router.delete("/{name}", status_code=204, summary="Delete a schedule (its missions stay)", responses=_CHANGE)
async def delete_schedule(name: str, state: StateDep, _: OperatorDep) -> Response:
    note_target("schedule", name)
    await schedules.delete_schedule(state, name)
    return Response(status_code=204)


@router.post("/{name}/pause", summary="Pause: nothing fires until resumed", responses=_CHANGE)
async def pause_schedule(name: str, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.pause_schedule(state, name, paused=True)


@router.post("/{name}/resume", summary="Resume from the next fire time after now", responses=_CHANGE)
async def resume_schedule(name: str, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.pause_schedule(state, name, paused=False)


@router.post("/{name}/trigger", summary="Fire now, by the overlap policy", responses=_CHANGE)
async def trigger_schedule(name: str, state: StateDep, _: OperatorDep) -> FiresOut:
    note_target("schedule", name)
    return await schedules.trigger_schedule(state, name)


@router.post(
    "/{name}/backfill",
    summary="Fire every fire time in [start, end], oldest first, by the overlap policy",
    responses=responses(_CHANGE, BODY_ERRORS),
)
async def backfill_schedule(name: str, body: BackfillRequest, state: StateDep, _: OperatorDep) -> FiresOut:
    note_target("schedule", name)
    return await schedules.backfill_schedule(state, name, body)
