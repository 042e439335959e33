"""CONTROL: pause, resume, cancel, approve and reject, as sent on ``coo.control.<mission>``.

``check_control`` says whether a command is legal for the mission as it is, and ``carry_out``
applies a legal one; the API's control command runs both under the mission's row lock in its own
transaction. ``apply_control`` does the same for a command that arrives on the bus (one published by
another process, or the notification of a command already applied, which it recognises by its id),
with a ``control.applied`` or ``control.refused`` timeline event naming the command's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from services.common.contracts import Control, ControlAction
from services.common.db.models import Approval, Mission, Step, TimelineEventRow
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.common.money import plain_or_none
from services.common.scrub import scrub_text
from services.common.settings import Settings
from services.common.status import MISSION_TERMINAL, STEP_TERMINAL, ApprovalStatus, MissionStatus, StepStatus
from services.common.telemetry import exemplar
from services.orchestrator.engine import budgets
from services.orchestrator.engine.admission import admit
from services.orchestrator.engine.scheduler import (
    advance,
    definition_for,
    dispatch,
    error_dict,
    load_steps,
    lock_mission,
)
from services.orchestrator.engine.transitions import move_mission, move_step, record
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import Conflict, InvalidInput, NotFound, OrchestratorError

log = get_logger(__name__)


@dataclass(frozen=True)
class ControlOutcome:
    control_id: str
    applied: bool
    status: str
    message: str | None = None


def check_control(mission: Mission, steps: Sequence[Step], control: Control) -> Step | None:
    """Raise ``Conflict`` (or ``NotFound`` / ``InvalidInput``) unless ``control`` is legal now; return
    the step it names, if any."""
    status = MissionStatus(mission.status)
    action = control.action
    if action is ControlAction.PAUSE:
        if status is not MissionStatus.RUNNING:
            raise Conflict(f"mission {mission.id} is {status}: only a running mission can be paused")
        return None
    if action is ControlAction.RESUME:
        if status is not MissionStatus.PAUSED:
            raise Conflict(f"mission {mission.id} is {status}: only a paused mission can be resumed")
        too_big = budgets.overflow(mission, control.add_budget_usd, control.add_budget_tokens)
        if too_big:
            raise InvalidInput(too_big, field="add_budget_usd")
        # Whatever paused it: resuming must not dispatch past the budget.
        shortfall = budgets.shortfall(mission, control.add_budget_usd, control.add_budget_tokens)
        if shortfall:
            raise Conflict(
                f"mission {mission.id} is still over budget after this resume: {shortfall}; "
                "add more with add_budget_usd / add_budget_tokens",
                field="add_budget_usd",
            )
        return None
    if action is ControlAction.CANCEL:
        if status in MISSION_TERMINAL:
            raise Conflict(f"mission {mission.id} is already {status}")
        return None
    # approve / reject a step
    if not control.step_key:
        raise InvalidInput(f"{action} needs a step key", field="step_key")
    step = next((s for s in steps if s.key == control.step_key), None)
    if step is None:
        raise NotFound(f"step '{control.step_key}' not found in mission {mission.id}", field="step_key")
    if step.status != StepStatus.AWAITING_APPROVAL:
        raise Conflict(f"step '{step.key}' is {step.status}, not awaiting approval")
    if action is ControlAction.APPROVE and status is not MissionStatus.RUNNING:
        raise Conflict(f"mission {mission.id} is {status}: resume it before approving a step")
    return step


async def apply_control(uow: UnitOfWork, settings: Settings, control: Control, control_id: str) -> ControlOutcome:
    session = uow.session
    mission = await lock_mission(session, control.mission_id)
    if mission is None:
        log.warning("control_for_unknown_mission", mission_id=str(control.mission_id), action=control.action)
        return ControlOutcome(control_id, False, "unknown", f"mission {control.mission_id} not found")
    earlier = await _outcome_of(uow, mission.id, control_id)
    if earlier is not None:  # a redelivered command: it was applied (or refused) already
        return ControlOutcome(control_id, earlier == "control.applied", mission.status, "already handled")
    steps = await load_steps(session, mission.id)
    try:
        step = check_control(mission, steps, control)
    except OrchestratorError as exc:
        record(
            uow,
            mission.id,
            "control.refused",
            control_id=control_id,
            action=control.action,
            actor=control.actor,
            message=exc.message,
        )
        return ControlOutcome(control_id, False, mission.status, exc.message)

    await carry_out(uow, settings, mission, steps, step, control, control_id)
    return ControlOutcome(control_id, True, mission.status)


async def carry_out(
    uow: UnitOfWork,
    settings: Settings,
    mission: Mission,
    steps: list[Step],
    step: Step | None,
    control: Control,
    control_id: str,
) -> None:
    """Apply a command that ``check_control`` found legal, the mission's row locked, with its
    ``control.applied`` event."""
    actor = control.actor
    action = control.action
    if action is ControlAction.PAUSE:
        move_mission(
            uow, mission, MissionStatus.PAUSED, reason="manual", note=control.reason, actor=actor, control_id=control_id
        )
        mission.pause_reason = "manual"
    elif action is ControlAction.RESUME:
        budgets.add_budget(mission, control.add_budget_usd, control.add_budget_tokens)
        move_mission(
            uow,
            mission,
            MissionStatus.RUNNING,
            actor=actor,
            control_id=control_id,
            add_budget_usd=plain_or_none(control.add_budget_usd),
            add_budget_tokens=control.add_budget_tokens,
        )
        await advance(uow, mission, steps)
    elif action is ControlAction.CANCEL:
        await _cancel(uow, mission, steps, actor=actor, reason=control.reason, control_id=control_id)
        await admit(uow, settings)
    else:
        assert step is not None
        await _decide(uow, mission, steps, step, control, control_id)
        if mission.status in MISSION_TERMINAL:
            await admit(uow, settings)
    record(
        uow, mission.id, "control.applied", control_id=control_id, action=action, step_key=control.step_key, actor=actor
    )


async def _outcome_of(uow: UnitOfWork, mission_id: uuid.UUID, control_id: str) -> str | None:
    """The outcome already recorded for ``control_id`` (``control.applied`` / ``control.refused``), if any."""
    return await uow.session.scalar(
        select(TimelineEventRow.type)
        .where(
            TimelineEventRow.mission_id == mission_id,
            TimelineEventRow.type.in_(("control.applied", "control.refused")),
            TimelineEventRow.data["control_id"].astext == control_id,
        )
        .limit(1)
    )


async def _cancel(
    uow: UnitOfWork, mission: Mission, steps: Sequence[Step], *, actor: str | None, reason: str | None, control_id: str
) -> None:
    for step in steps:
        if step.status not in STEP_TERMINAL:
            move_step(uow, step, StepStatus.CANCELLED, reason="mission cancelled")
    pending = await uow.session.execute(
        select(Approval).where(Approval.mission_id == mission.id, Approval.status == ApprovalStatus.PENDING)
    )
    now = datetime.now(UTC)
    for approval in pending.scalars():
        approval.status = ApprovalStatus.EXPIRED
        approval.reason = "mission cancelled"
        approval.decided_at = now
    message = scrub_text(reason) if reason else "cancelled by an operator"
    mission.error = {"type": "CANCELLED", "message": message, "actor": actor}
    move_mission(uow, mission, MissionStatus.CANCELLED, actor=actor, reason=reason, control_id=control_id)


async def _decide(
    uow: UnitOfWork, mission: Mission, steps: list[Step], step: Step, control: Control, control_id: str
) -> None:
    approval = (
        await uow.session.execute(
            select(Approval)
            .where(Approval.step_id == step.id, Approval.status == ApprovalStatus.PENDING)
            .order_by(Approval.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    now = datetime.now(UTC)
    approved = control.action is ControlAction.APPROVE
    if approval is not None:
        approval.status = ApprovalStatus.APPROVED if approved else ApprovalStatus.REJECTED
        approval.decided_by = control.actor
        approval.reason = scrub_text(control.reason) if control.reason else None
        approval.decided_at = now
        waited = max(0.0, (now - approval.created_at).total_seconds()) if approval.created_at else 0.0
        uow.after_commit(lambda metrics: metrics.approval_wait.observe(waited, exemplar=exemplar()))
    verdict = "approval.approved" if approved else "approval.rejected"
    record(uow, mission.id, verdict, step_key=step.key, actor=control.actor, reason=control.reason)
    if approved:
        definition = await definition_for(uow.session, mission.workflow_id)
        dispatch(uow, mission, step, definition)
        return
    message = f"rejected by {control.actor or 'an operator'}" + (f": {control.reason}" if control.reason else "")
    step.error = error_dict(ErrorType.REJECTED, message)
    move_step(uow, step, StepStatus.FAILED, error_type=ErrorType.REJECTED, message=message, control_id=control_id)
    await advance(uow, mission, steps)


async def expire_approval(uow: UnitOfWork, settings: Settings, approval_id: uuid.UUID) -> bool:
    """Fail the step of an approval nobody decided within ``approval_expiry_s`` (``REJECTED``)."""
    session = uow.session
    mission_id = await session.scalar(select(Approval.mission_id).where(Approval.id == approval_id))
    if mission_id is None:
        return False
    mission = await lock_mission(session, mission_id)
    approval = await session.get(Approval, approval_id, with_for_update=True)
    if mission is None or approval is None or approval.status != ApprovalStatus.PENDING:
        return False  # decided meanwhile
    steps = await load_steps(session, mission.id)
    step = next((s for s in steps if s.id == approval.step_id), None)
    if step is None or step.status != StepStatus.AWAITING_APPROVAL or mission.status != MissionStatus.RUNNING:
        return False
    waited = settings.approval_expiry_s
    approval.status = ApprovalStatus.EXPIRED
    approval.reason = f"not decided within {waited:g}s"
    approval.decided_at = datetime.now(UTC)
    uow.after_commit(lambda metrics: metrics.approval_wait.observe(waited))
    record(uow, mission.id, "approval.expired", step_key=step.key, after_s=waited)
    message = f"approval expired: nobody decided within {waited:g}s (COO_APPROVAL_EXPIRY_S)"
    step.error = error_dict(ErrorType.REJECTED, message)
    move_step(uow, step, StepStatus.FAILED, error_type=ErrorType.REJECTED, message=message)
    await advance(uow, mission, steps)
    if mission.status in MISSION_TERMINAL:
        await admit(uow, settings)
    return True
