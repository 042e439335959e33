"""CONTROL: pause, resume, cancel a mission; approve or reject a step.

A command is checked and applied under the mission's row lock in one transaction, with its
timeline events; after the commit it is published on ``coo.control.<mission>`` as a notification
for other replicas and workers (its ``Nats-Msg-Id`` is ``control:<id>``, so the control consumer
knows it as applied already).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts import Control, ControlAction
from services.orchestrator.engine.control import carry_out, check_control
from services.orchestrator.engine.scheduler import load_steps, lock_mission
from services.orchestrator.errors import NotFound
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable


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
    applied: bool = Field(description="True: the command was applied before the answer.")
    status: str = Field(description="The mission's status after the command.")


async def run_control(state: OrchestratorState, control: Control) -> ControlAnswer:
    """Apply ``control`` now, or raise ``NotFound`` / ``Conflict`` / ``InvalidInput`` with nothing changed."""
    require_storable(control.reason, "reason")
    control_id = uuid.uuid4().hex
    async with state.unit() as uow:
        mission = await lock_mission(uow.session, control.mission_id)
        if mission is None:
            raise NotFound(f"mission {control.mission_id} not found", field="id")
        steps = await load_steps(uow.session, mission.id)
        step = check_control(mission, steps, control)
        await carry_out(uow, state.settings, mission, steps, step, control, control_id)
        status = mission.status
        bus = state.bus
        uow.publish_after_commit(
            bus.subjects.control(control.mission_id), control.to_bytes(), msg_id=f"control:{control_id}"
        )
    return ControlAnswer(
        mission_id=control.mission_id,
        control_id=control_id,
        action=control.action,
        step_key=control.step_key,
        applied=True,
        status=status,
    )
