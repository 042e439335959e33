"""CONTROL routes: pause, resume, cancel a mission; approve or reject a step.

Each command is applied in the request (``commands.control``): 200 with the mission's new status,
or 404 / 409 / 422 with nothing changed.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from fastapi import APIRouter, Depends
from pydantic import Field

from services.common.contracts import Control, ControlAction
from services.common.http import error_responses
from services.common.money import positive_amount_schema
from services.orchestrator.api.deps import (
    BODY_ERRORS,
    KEY_ERRORS,
    SCOPE_ERRORS,
    OperatorDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.commands.control import ControlAnswer, ReasonBody, ResumeBody, run_control

router = APIRouter(
    prefix="/v1/missions",
    tags=["control"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)


class ResumeRequest(ResumeBody):
    """``ResumeBody`` with its amount described as validation takes it (the OpenAPI document's view)."""

    add_budget_usd: Decimal | None = Field(
        default=None, gt=0, max_digits=18, decimal_places=8, json_schema_extra=positive_amount_schema
    )


_RESPONSES = responses(
    SCOPE_ERRORS,
    BODY_ERRORS,
    error_responses(
        404, 409, described={404: "No such mission or step", 409: "Not legal in the mission's current state"}
    ),
)


@router.post("/{mission_id}/pause", summary="Pause a running mission", responses=_RESPONSES)
async def pause_mission(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> ControlAnswer:
    reason = body.reason if body else None
    control = Control(mission_id=mission_id, action=ControlAction.PAUSE, actor=caller.name, reason=reason)
    return await run_control(state, control)


@router.post("/{mission_id}/resume", summary="Resume a paused mission, optionally adding budget", responses=_RESPONSES)
async def resume_mission(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ResumeRequest | None = None
) -> ControlAnswer:
    body = body or ResumeRequest()
    control = Control(
        mission_id=mission_id,
        action=ControlAction.RESUME,
        actor=caller.name,
        add_budget_usd=body.add_budget_usd,
        add_budget_tokens=body.add_budget_tokens,
    )
    return await run_control(state, control)


@router.post("/{mission_id}/cancel", summary="Cancel a mission", responses=_RESPONSES)
async def cancel_mission(
    mission_id: uuid.UUID, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> ControlAnswer:
    reason = body.reason if body else None
    control = Control(mission_id=mission_id, action=ControlAction.CANCEL, actor=caller.name, reason=reason)
    return await run_control(state, control)


@router.post("/{mission_id}/steps/{key}/approve", summary="Approve a step waiting for approval", responses=_RESPONSES)
async def approve_step(
    mission_id: uuid.UUID, key: str, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> ControlAnswer:
    reason = body.reason if body else None
    control = Control(
        mission_id=mission_id, action=ControlAction.APPROVE, step_key=key, actor=caller.name, reason=reason
    )
    return await run_control(state, control)


@router.post("/{mission_id}/steps/{key}/reject", summary="Reject a step waiting for approval", responses=_RESPONSES)
async def reject_step(
    mission_id: uuid.UUID, key: str, state: StateDep, caller: OperatorDep, body: ReasonBody | None = None
) -> ControlAnswer:
    reason = body.reason if body else None
    control = Control(
        mission_id=mission_id, action=ControlAction.REJECT, step_key=key, actor=caller.name, reason=reason
    )
    return await run_control(state, control)
