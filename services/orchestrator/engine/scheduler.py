"""DAG scheduling: decide which steps of a mission move next, and dispatch them.

Every function here runs inside a UnitOfWork that holds the mission's row lock, so engine replicas
never act on the same mission at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts import StepError, WorkItem
from services.common.db.models import Agent, Approval, Mission, Step, Workflow
from services.common.errors import CooError, ErrorType
from services.common.scrub import scrub_text
from services.common.status import STEP_TERMINAL, MissionStatus, StepStatus
from services.common.telemetry import inject_headers, traceparent_context, tracer
from services.orchestrator.engine import templates
from services.orchestrator.engine.dag import WorkflowDefinition, leaves
from services.orchestrator.engine.transitions import STEP_DONE_OK, move_mission, move_step
from services.orchestrator.engine.unit import UnitOfWork

_definitions: dict[uuid.UUID, WorkflowDefinition] = {}


async def definition_for(session: AsyncSession, workflow_id: uuid.UUID) -> WorkflowDefinition:
    """Workflow versions are immutable, so their parsed definitions are cached by id."""
    cached = _definitions.get(workflow_id)
    if cached is None:
        row = await session.get_one(Workflow, workflow_id)
        cached = WorkflowDefinition.model_validate(row.definition)
        if len(_definitions) > 1024:
            _definitions.clear()
        _definitions[workflow_id] = cached
    return cached


# The engine's hot statements, built once (only their parameters change).
_LOCK_MISSION = select(Mission).where(Mission.id == bindparam("mission_id")).with_for_update()
_STEPS = select(Step).where(Step.mission_id == bindparam("mission_id"))
_LOCK_MISSIONS = (
    select(Mission)
    .where(Mission.id == any_(bindparam("mission_ids", type_=ARRAY(UUID(as_uuid=True)))))
    .order_by(Mission.id)  # locked in this order: batches in flight never deadlock each other
    .with_for_update()
)
_STEPS_OF = select(Step).where(Step.mission_id == any_(bindparam("mission_ids", type_=ARRAY(UUID(as_uuid=True)))))
_AGENTS = select(Agent).where(Agent.name.in_(bindparam("names", expanding=True)))


async def lock_mission(session: AsyncSession, mission_id: uuid.UUID) -> Mission | None:
    result = await session.execute(_LOCK_MISSION, {"mission_id": mission_id})
    return result.scalar_one_or_none()


async def lock_missions(uow: UnitOfWork, mission_ids: Sequence[uuid.UUID]) -> None:
    """Lock several missions in one statement (in id order) and read their steps in one more, for
    the unit of work's changes to find them (``locked_mission``, ``uow.memo["steps"]``)."""
    locked: dict[uuid.UUID, Mission | None] = uow.memo.setdefault("locked", {})
    wanted = sorted(set(mission_ids) - locked.keys())
    if not wanted:
        return
    result = await uow.session.execute(_LOCK_MISSIONS, {"mission_ids": wanted})
    for mission in result.scalars():
        locked[mission.id] = mission
    found = [mission_id for mission_id in wanted if mission_id in locked]
    for mission_id in wanted:
        locked.setdefault(mission_id, None)
    steps: dict[uuid.UUID, list[Step]] = uow.memo.setdefault("steps", {})
    by_mission = await load_steps_of(uow.session, found)
    for mission_id in found:
        steps[mission_id] = by_mission.get(mission_id, [])


async def locked_mission(uow: UnitOfWork, mission_id: uuid.UUID) -> Mission | None:
    """The mission, locked: by ``lock_missions`` earlier in the unit of work, else now."""
    locked: dict[uuid.UUID, Mission | None] | None = uow.memo.get("locked")
    if locked is not None and mission_id in locked:
        return locked[mission_id]
    return await lock_mission(uow.session, mission_id)


async def load_steps(session: AsyncSession, mission_id: uuid.UUID) -> list[Step]:
    result = await session.execute(_STEPS, {"mission_id": mission_id})
    return list(result.scalars())


async def load_steps_of(session: AsyncSession, mission_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Step]]:
    """The steps of several missions in one query, by mission."""
    by_mission: dict[uuid.UUID, list[Step]] = {}
    if mission_ids:
        for step in (await session.execute(_STEPS_OF, {"mission_ids": list(mission_ids)})).scalars():
            by_mission.setdefault(step.mission_id, []).append(step)
    return by_mission


def _now() -> datetime:
    return datetime.now(UTC)


def error_dict(error_type: ErrorType, message: str, detail: str | None = None) -> dict[str, Any]:
    """An error as stored on a step or mission (scrubbed: messages may quote inputs)."""
    error = StepError(type=error_type, message=scrub_text(message), detail=scrub_text(detail) if detail else None)
    return error.model_dump(mode="json", exclude_none=True)


def _template_context(mission: Mission, steps: Sequence[Step]) -> dict[str, Any]:
    outputs = {
        step.key: {"output": step.output if step.output is not None else {}, "status": step.status}
        for step in steps
        if step.status in STEP_DONE_OK
    }
    return templates.build_context(
        mission.input or {}, outputs, {"id": str(mission.id), "workflow": mission.workflow_name}
    )


async def _agents(uow: UnitOfWork, names: set[str]) -> dict[str, Agent]:
    """Agents by name, read once per unit of work (a batch dispatches many steps of few agents)."""
    known: dict[str, Agent] = uow.memo.setdefault("agents", {})
    missing = names - known.keys()
    if missing:
        result = await uow.session.execute(_AGENTS, {"names": sorted(missing)})
        known.update({agent.name: agent for agent in result.scalars()})
    return {name: known[name] for name in names if name in known}


def dispatch(uow: UnitOfWork, mission: Mission, step: Step, definition: WorkflowDefinition) -> None:
    """Start a new attempt of ``step``: state change now, WorkItem published after commit."""
    step.attempt += 1
    step.next_attempt_at = None
    with tracer().start_as_current_span(
        "step.dispatch",
        context=traceparent_context(mission.traceparent),  # a child of mission.execute, whoever dispatches
        attributes={
            "coo.mission_id": str(mission.id),
            "coo.step": step.key,
            "coo.step_id": str(step.id),
            "coo.attempt": step.attempt,
            "coo.agent": step.agent,
        },
    ):
        move_step(uow, step, StepStatus.DISPATCHED, agent=step.agent)
        dispatched_agent = step.agent
        uow.after_commit(lambda metrics: metrics.prepare_agent(dispatched_agent))
        publish_work_item(uow, mission, step, definition)


def work_item(mission: Mission, step: Step, definition: WorkflowDefinition) -> WorkItem:
    """The message for the step's current attempt (also what a dead letter keeps, for replay)."""
    spec = definition.step(step.key)
    return WorkItem(
        mission_id=mission.id,
        step_id=step.id,
        step_key=step.key,
        attempt=step.attempt,
        agent=step.agent,
        input=step.input or {},
        timeout_s=step.timeout_s,
        workflow=mission.workflow_name,
        checks=[check.model_dump(mode="json") for check in spec.checks],
        max_iterations=spec.max_iterations,
        egress=list(spec.egress),
    )


def publish_work_item(uow: UnitOfWork, mission: Mission, step: Step, definition: WorkflowDefinition) -> None:
    item = work_item(mission, step, definition)
    uow.publish_after_commit(
        uow.bus.subjects.work(step.agent),
        item.to_bytes(),
        msg_id=item.msg_id,
        headers=_trace_headers(mission),
    )


def _trace_headers(mission: Mission) -> dict[str, str]:
    """The current span's context (``step.dispatch`` when dispatching), else the mission's."""
    headers = inject_headers()
    if "traceparent" not in headers and mission.traceparent:
        headers["traceparent"] = mission.traceparent
    return headers


async def advance(uow: UnitOfWork, mission: Mission, steps: list[Step] | None = None) -> None:
    """Move every step that can move, then settle the mission if all its steps are done."""
    if mission.status != MissionStatus.RUNNING:
        return
    session = uow.session
    if steps is None:
        steps = await load_steps(session, mission.id)
    definition = await definition_for(session, mission.workflow_id)
    by_key = {step.key: step for step in steps}
    order = [by_key[spec.id] for spec in definition.steps if spec.id in by_key]
    now = _now()

    progressed = True
    while progressed:
        progressed = False
        for step in order:
            if step.status != StepStatus.PENDING:
                continue
            deps = [by_key[key] for key in step.depends_on]
            if not all(dep.status in STEP_DONE_OK for dep in deps):
                continue
            spec = definition.step(step.key)
            if deps and all(dep.status == StepStatus.SKIPPED for dep in deps):
                move_step(uow, step, StepStatus.SKIPPED, reason="all dependencies skipped")
                progressed = True
                continue
            if spec.when is not None:
                try:
                    run = templates.evaluate_condition(spec.when, _template_context(mission, steps), field="when")
                except CooError as exc:
                    step.error = error_dict(exc.error_type, exc.message)
                    move_step(uow, step, StepStatus.READY)
                    move_step(uow, step, StepStatus.FAILED, error_type=exc.error_type, message=exc.message)
                    progressed = True
                    continue
                if not run:
                    move_step(uow, step, StepStatus.SKIPPED, reason=f"when: {spec.when}")
                    progressed = True
                    continue
            move_step(uow, step, StepStatus.READY)
            progressed = True

    ready = [step for step in order if step.status == StepStatus.READY]
    agents = await _agents(uow, {step.agent for step in ready}) if ready else {}
    for step in ready:
        spec = definition.step(step.key)
        try:
            step.input = templates.render_value(spec.input, _template_context(mission, steps), field="input")
        except CooError as exc:
            step.error = error_dict(exc.error_type, exc.message)
            move_step(uow, step, StepStatus.FAILED, error_type=exc.error_type, message=exc.message)
            continue
        agent = agents.get(step.agent)
        if agent is not None and agent.approval_policy == "approval_required":
            session.add(Approval(mission_id=mission.id, step_id=step.id, attempt=step.attempt + 1))
            move_step(uow, step, StepStatus.AWAITING_APPROVAL)
            continue
        dispatch(uow, mission, step, definition)

    for step in order:
        if step.status == StepStatus.RETRY_WAIT and step.next_attempt_at is not None and step.next_attempt_at <= now:
            dispatch(uow, mission, step, definition)

    settle(uow, mission, order, definition)


def settle(uow: UnitOfWork, mission: Mission, steps: Sequence[Step], definition: WorkflowDefinition) -> None:
    """Finish the mission when a step failed for good, or when every step is done."""
    failed = [step for step in steps if step.status == StepStatus.FAILED]
    if failed:
        for step in steps:
            if step.status not in STEP_TERMINAL:
                move_step(uow, step, StepStatus.CANCELLED, reason=f"step '{failed[0].key}' failed")
        mission.error = {"step": failed[0].key, **(failed[0].error or {})}
        move_mission(uow, mission, MissionStatus.FAILED, step_key=failed[0].key)
        return
    if all(step.status in STEP_DONE_OK for step in steps):
        by_key = {step.key: step for step in steps}
        mission.output = {
            key: by_key[key].output for key in leaves(definition) if by_key[key].status == StepStatus.SUCCEEDED
        }
        move_mission(uow, mission, MissionStatus.SUCCEEDED)
