"""``/v1/schedules``: missions started at fire times (cron or interval), exactly once each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from services.orchestrator.api.deps import CallerDep, OperatorDep, StateDep
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.commands import schedules
from services.orchestrator.commands.schedules import BackfillRequest, FiresOut, ScheduleChange, ScheduleCreate
from services.orchestrator.reads.schedules import FIRES_SHOWN, ScheduleOut, list_schedules, read_schedule

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], dependencies=[Depends(storable_params)])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No schedule of that name"}}


@router.post(
    "",
    status_code=201,
    summary="Create a schedule; the answer lists its next five fire times",
    responses={409: {"description": "A schedule of that name exists"}},
)
async def create_schedule(body: ScheduleCreate, state: StateDep, caller: OperatorDep) -> ScheduleOut:
    note_target("schedule", body.name)
    return await schedules.create_schedule(state, body, caller)


@router.get("", summary="Every schedule, with its next fire times and latest fires")
async def get_schedules(state: StateDep, _: CallerDep) -> list[ScheduleOut]:
    return await list_schedules(state)


@router.get("/{name}", summary="A schedule with its next fire times and latest fires", responses=_NOT_FOUND)
async def get_schedule(
    name: str,
    state: StateDep,
    _: CallerDep,
    fires: int = Query(default=FIRES_SHOWN, ge=0, le=1000, description="How many of the latest fire times to show"),
) -> ScheduleOut:
    return await read_schedule(state, name, fires)


@router.patch("/{name}", summary="Change a schedule (only the fields given)", responses=_NOT_FOUND)
async def change_schedule(name: str, body: ScheduleChange, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.change_schedule(state, name, body)


@router.delete("/{name}", status_code=204, summary="Delete a schedule (its missions stay)", responses=_NOT_FOUND)
async def delete_schedule(name: str, state: StateDep, _: OperatorDep) -> Response:
    note_target("schedule", name)
    await schedules.delete_schedule(state, name)
    return Response(status_code=204)


@router.post("/{name}/pause", summary="Pause: nothing fires until resumed", responses=_NOT_FOUND)
async def pause_schedule(name: str, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.pause_schedule(state, name, paused=True)


@router.post("/{name}/resume", summary="Resume from the next fire time after now", responses=_NOT_FOUND)
async def resume_schedule(name: str, state: StateDep, _: OperatorDep) -> ScheduleOut:
    note_target("schedule", name)
    return await schedules.pause_schedule(state, name, paused=False)


@router.post("/{name}/trigger", summary="Fire now, by the overlap policy", responses=_NOT_FOUND)
async def trigger_schedule(name: str, state: StateDep, _: OperatorDep) -> FiresOut:
    note_target("schedule", name)
    return await schedules.trigger_schedule(state, name)


@router.post(
    "/{name}/backfill",
    summary="Fire every fire time in [start, end], oldest first, by the overlap policy",
    responses=_NOT_FOUND,
)
async def backfill_schedule(name: str, body: BackfillRequest, state: StateDep, _: OperatorDep) -> FiresOut:
    note_target("schedule", name)
    return await schedules.backfill_schedule(state, name, body)
