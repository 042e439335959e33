"""Creating missions: a mission row, its steps, and admission, in one transaction; whatever
started it (a request, a schedule, an event) asks through ``start_mission``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Mission, Step, Workflow
from services.common.scrub import scrub
from services.common.settings import Settings
from services.common.status import MissionStatus, StepStatus
from services.common.telemetry import current_traceparent, tracer
from services.orchestrator.engine.admission import NewMission, admit_before_commit, new_missions
from services.orchestrator.engine.dag import WorkflowDefinition
from services.orchestrator.engine.scheduler import definition_for
from services.orchestrator.engine.transitions import record
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import InvalidInput, NotFound


class WorkflowRef(NamedTuple):
    """A workflow version as a mission pins it."""

    id: uuid.UUID
    name: str
    version: int


@dataclass(frozen=True)
class MissionSpec:
    """What a new mission is asked to be, and why it starts (``trigger``: ``{"type": "api"}``,
    ``{"type": "schedule", "name", "fire_time"}``, ``{"type": "event"|"webhook", "name", "event_id"}``)."""

    workflow: str
    version: int | None
    input: dict[str, Any]
    caller: str
    priority: int = 0
    budget_usd: Decimal | None = None
    budget_tokens: int | None = None
    idempotency_key: str | None = None
    trigger: dict[str, Any] = field(default_factory=lambda: {"type": "api"})
    rerun_of: uuid.UUID | None = None  # the mission this one runs again


async def start_mission(uow: UnitOfWork, settings: Settings, spec: MissionSpec) -> Mission:
    """A new mission of ``spec`` in ``uow``; ``NotFound`` for an unknown workflow, ``InvalidInput``
    for an input its ``input_schema`` refuses. The workflow is read once per unit of work: the
    missions that come together mostly name the same one."""
    refs: dict[tuple[str, int | None], WorkflowRef] = uow.memo.setdefault("workflow_refs", {})
    workflow = refs.get((spec.workflow, spec.version))
    if workflow is None:
        workflow = refs[(spec.workflow, spec.version)] = await find_workflow_ref(
            uow.session, spec.workflow, spec.version
        )
    definition = await definition_for(uow.session, workflow.id)
    check_input(definition.input_schema, spec.input)
    return await create_mission(
        uow,
        settings,
        workflow,
        definition,
        mission_input=spec.input,
        priority=spec.priority,
        caller=spec.caller,
        budget_usd=spec.budget_usd,
        budget_tokens=spec.budget_tokens,
        idempotency_key=spec.idempotency_key,
        traceparent=None,
        trigger=spec.trigger,
        rerun_of=spec.rerun_of,
    )


def check_input(schema: dict[str, Any] | None, mission_input: dict[str, Any]) -> None:
    """The workflow's ``input_schema``, if it has one: 422 naming the first bad field."""
    if schema is None:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(mission_input), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "input" + "".join(f".{part}" for part in first.absolute_path)
        raise InvalidInput(f"{where}: {first.message}", field=where)


# What a mission needs of its workflow (the definition itself is cached by id), built once.
_REF_LATEST = (
    select(Workflow.id, Workflow.name, Workflow.version)
    .where(Workflow.name == bindparam("name"))
    .order_by(Workflow.version.desc())
    .limit(1)
)
_REF_VERSION = select(Workflow.id, Workflow.name, Workflow.version).where(
    Workflow.name == bindparam("name"), Workflow.version == bindparam("version")
)


async def find_workflow_ref(session: AsyncSession, name: str, version: int | None) -> WorkflowRef:
    """The id, name and version of a workflow (the latest when ``version`` is None), or 404."""
    query, params = (
        (_REF_LATEST, {"name": name}) if version is None else (_REF_VERSION, {"name": name, "version": version})
    )
    # On the connection (Core): a submission batch's earlier missions are not flushed by this read.
    row = (await (await session.connection()).execute(query, params)).one_or_none()
    if row is None:
        raise workflow_not_found(name, version)
    return WorkflowRef(row.id, row.name, row.version)


def workflow_not_found(name: str, version: int | None) -> NotFound:
    what = f"workflow '{name}'" + (f" version {version}" if version is not None else "")
    return NotFound(f"{what} not found", field="workflow")


async def create_mission(
    uow: UnitOfWork,
    settings: Settings,
    workflow: WorkflowRef | Workflow,
    definition: WorkflowDefinition,
    *,
    mission_input: dict[str, Any],
    priority: int,
    caller: str,
    budget_usd: Decimal | None,
    budget_tokens: int | None,
    idempotency_key: str | None,
    traceparent: str | None,
    trigger: dict[str, Any] | None = None,
    rerun_of: uuid.UUID | None = None,
) -> Mission:
    """A mission is one trace: its ``mission.execute`` span (a child of the submitting request's
    span) is the parent of every ``step.dispatch``; its context is kept in ``missions.traceparent``."""
    with tracer().start_as_current_span(
        "mission.execute", attributes={"coo.workflow": workflow.name, "coo.workflow_version": workflow.version}
    ) as span:
        mission = Mission(
            id=uuid.uuid4(),
            created_at=datetime.now(UTC),  # not now(): missions of one batch keep their arrival order
            workflow_id=workflow.id,
            workflow_name=workflow.name,
            workflow_version=workflow.version,
            status=MissionStatus.QUEUED,
            priority=priority,
            input=scrub(mission_input),  # secrets never reach a row: what steps see is redacted too
            caller=caller,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            idempotency_key=idempotency_key,
            traceparent=traceparent or current_traceparent(),
            trigger=trigger or {"type": "api"},
            rerun_of=rerun_of,
        )
        steps = [
            Step(
                id=uuid.uuid4(),
                mission_id=mission.id,
                key=spec.id,
                agent=spec.agent,
                status=StepStatus.PENDING,
                attempt=0,
                depends_on=list(spec.depends_on),
                max_attempts=spec.retry.max_attempts,
                timeout_s=spec.timeout_s,
            )
            for spec in definition.steps
        ]
        # Inserted with its steps at the next flush (one statement per table); admission may start
        # it before then, so that it is inserted as it runs rather than inserted, then updated.
        uow.session.add(mission)
        uow.session.add_all(steps)
        new_missions(uow)[mission.id] = NewMission(mission, steps)
        record(
            uow,
            mission.id,
            "mission.submitted",
            workflow=workflow.name,
            version=workflow.version,
            priority=priority,
            caller=caller,
            actor=caller,
            trigger=mission.trigger,
            rerun_of=str(rerun_of) if rerun_of is not None else None,
        )
        admit_before_commit(uow, settings)
        span.set_attribute("coo.mission_id", str(mission.id))
        return mission
