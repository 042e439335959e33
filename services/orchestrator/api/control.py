"""CONTROL routes: pause, resume, cancel a mission; approve or reject a step.

Each command is checked against the mission as it is (409 when illegal), published on
``coo.control.<mission>``, applied by the engine's control consumer, and answered once the engine
says it applied (200) or refused (409) it — or 202 if that takes longer than a few seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.common.contracts import Control, ControlAction
from services.common.db.models import Mission, TimelineEventRow
from services.common.http import ApiError
from services.orchestrator.api.deps import OperatorDep, StateDep
from services.orchestrator.api.storable import require_storable, storable_params
from services.orchestrator.engine.control import ControlRefused, check_control
from services.orchestrator.engine.scheduler import load_steps
from services.orchestrator.state import OrchestratorState

router = APIRouter(prefix="/v1/missions", tags=["control"], dependencies=[Depends(storable_params)])

OUTCOME_WAIT_S = 10.0
_OUTCOMES = ("control.applied", "control.refused")


class ResumeBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    add_budget_usd: Decimal | None = Field(default=None, gt=0, max_digits=18, decimal_places=8)
    add_budget_tokens: int | None = Field(default=None, gt=0, le=2**62)


class ReasonBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class ControlAnswer(BaseModel):
    mission_id: uuid.UUID
    control_id: str
    action: ControlAction
    step_key: str | None
    applied: bool | None = Field(description="True once applied; null while still on its way (202).")
    status: str = Field(description="The mission's status after the command (or now, if not applied yet).")


_RESPONSES: dict[int | str, dict[str, str]] = {
    202: {"description": "Accepted; the engine has not applied it yet"},
    404: {"description": "No such mission or step"},
    409: {"description": "Not legal in the mission's current state"},
}


@router.post("/{mission_id}/pause", summary="Pause a running mission", responses=_RESPONSES)
async def pause(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> JSONResponse:
    reason = body.reason if body else None
    control = Control(mission_id=mission_id, action=ControlAction.PAUSE, actor=caller.name, reason=reason)
    return await send_control(state, control)


@router.post("/{mission_id}/resume", summary="Resume a paused mission, optionally adding budget", responses=_RESPONSES)
async def resume(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ResumeBody | None = None
) -> JSONResponse:
    body = body or ResumeBody()
    control = Control(
        mission_id=mission_id,
        action=ControlAction.RESUME,
        actor=caller.name,
        add_budget_usd=body.add_budget_usd,
        add_budget_tokens=body.add_budget_tokens,
    )
    return await send_control(state, control)


@router.post("/{mission_id}/cancel", summary="Cancel a mission", responses=_RESPONSES)
async def cancel(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> JSONResponse:
    reason = body.reason if body else None
    control = Control(mission_id=mission_id, action=ControlAction.CANCEL, actor=caller.name, reason=reason)
    return await send_control(state, control)


@router.post("/{mission_id}/steps/{key}/approve", summary="Approve a step waiting for approval", responses=_RESPONSES)
async def approve(
    mission_id: uuid.UUID, key: str, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> JSONResponse:
    return await _decide(state, ControlAction.APPROVE, mission_id, key, caller.name, body)


@router.post("/{mission_id}/steps/{key}/reject", summary="Reject a step waiting for approval", responses=_RESPONSES)
async def reject(
    mission_id: uuid.UUID, key: str, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> JSONResponse:
    return await _decide(state, ControlAction.REJECT, mission_id, key, caller.name, body)


async def _decide(
    state: OrchestratorState,
    action: ControlAction,
    mission_id: uuid.UUID,
    key: str,
    actor: str,
    body: ReasonBody | None,
) -> JSONResponse:
    reason = body.reason if body else None
    control = Control(mission_id=mission_id, action=action, step_key=key, actor=actor, reason=reason)
    return await send_control(state, control)


async def send_control(state: OrchestratorState, control: Control) -> JSONResponse:
    answer = await run_control(state, control)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202 if answer.applied is None else 200)


async def run_control(state: OrchestratorState, control: Control) -> ControlAnswer:
    """Check ``control``, publish it on ``coo.control.<mission>`` and wait for the engine's verdict:
    the answer (``applied`` None when it is still on its way), or ApiError 404/409/422."""
    require_storable(control.reason, "reason")
    async with state.sessionmaker() as session:
        mission = await session.get(Mission, control.mission_id)
        if mission is None:
            raise ApiError(404, "not_found", f"mission {control.mission_id} not found", field="id")
        try:
            check_control(mission, await load_steps(session, mission.id), control)
        except ControlRefused as exc:
            error_type = {404: "not_found", 422: "validation"}.get(exc.status, "conflict")
            raise ApiError(exc.status, error_type, exc.message, field=exc.field) from exc

    control_id = uuid.uuid4().hex
    outcomes: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def on_event(msg: object) -> None:
        event = orjson.loads(msg.data)  # type: ignore[attr-defined]
        if event.get("type") in _OUTCOMES and (event.get("data") or {}).get("control_id") == control_id:
            outcomes.put_nowait(event)

    bus = state.bus
    sub = await bus.nc.subscribe(bus.subjects.timeline(control.mission_id), cb=on_event)
    try:
        await bus.publish(bus.subjects.control(control.mission_id), control.to_bytes(), msg_id=f"control:{control_id}")
        event = await _wait_outcome(state, control.mission_id, control_id, outcomes)
    finally:
        await sub.unsubscribe()

    async with state.sessionmaker() as session:
        status = await session.scalar(select(Mission.status).where(Mission.id == control.mission_id)) or "unknown"
    answer = ControlAnswer(
        mission_id=control.mission_id,
        control_id=control_id,
        action=control.action,
        step_key=control.step_key,
        applied=None if event is None else event["type"] == "control.applied",
        status=status,
    )
    if event is not None and event["type"] == "control.refused":
        data = event.get("data")
        message = str(data.get("message") or "refused") if isinstance(data, dict) else "refused"
        raise ApiError(409, "conflict", message)
    return answer


async def _wait_outcome(
    state: OrchestratorState, mission_id: uuid.UUID, control_id: str, outcomes: asyncio.Queue[dict[str, object]]
) -> dict[str, object] | None:
    """The engine's verdict on the command: from the timeline fan-out, or the timeline table if
    the fan-out was missed; None when neither came within ``OUTCOME_WAIT_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OUTCOME_WAIT_S
    while (left := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(min(1.0, left)):
                return await outcomes.get()
        except TimeoutError:
            async with state.sessionmaker() as session:
                row = (
                    await session.execute(
                        select(TimelineEventRow)
                        .where(
                            TimelineEventRow.mission_id == mission_id,
                            TimelineEventRow.type.in_(_OUTCOMES),
                            TimelineEventRow.data["control_id"].astext == control_id,
                        )
                        .order_by(TimelineEventRow.id)
                        .limit(1)
                    )
                ).scalar_one_or_none()
            if row is not None:
                return {"type": row.type, "data": row.data}
    return None
