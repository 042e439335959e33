"""Creating missions: a mission row, its steps, and admission, in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from services.common.db.models import Mission, Step, Workflow
from services.common.scrub import scrub
from services.common.settings import Settings
from services.common.status import MissionStatus, StepStatus
from services.common.telemetry import current_traceparent, tracer
from services.orchestrator.engine.admission import NewMission, admit_before_commit, new_missions
from services.orchestrator.engine.dag import WorkflowDefinition
from services.orchestrator.engine.transitions import record
from services.orchestrator.engine.unit import UnitOfWork


class WorkflowRef(NamedTuple):
    """A workflow version as a mission pins it."""

    id: uuid.UUID
    name: str
    version: int


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
        )
        admit_before_commit(uow, settings)
        span.set_attribute("coo.mission_id", str(mission.id))
        return mission
