"""The only place where missions and steps change state: tables of legal moves, each move
recorded as a timeline event in the same transaction. The statuses are ``services.common.status``'s
(re-exported here for the engine's modules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common.db.models import Mission, Step, TimelineEventRow
from services.common.status import MISSION_TERMINAL, STEP_TERMINAL, MissionStatus, StepStatus
from services.common.telemetry import current_trace_id, exemplar
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.unit import UnitOfWork

M, S = MissionStatus, StepStatus

MISSION_MOVES: dict[MissionStatus, frozenset[MissionStatus]] = {
    M.QUEUED: frozenset({M.RUNNING, M.CANCELLED}),
    M.RUNNING: frozenset({M.PAUSED, M.SUCCEEDED, M.FAILED, M.CANCELLED}),
    M.PAUSED: frozenset({M.RUNNING, M.CANCELLED}),
    M.FAILED: frozenset({M.RUNNING}),  # a dead letter replayed revives its mission
    M.SUCCEEDED: frozenset(),
    M.CANCELLED: frozenset(),
}

STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.READY, S.SKIPPED, S.CANCELLED}),
    S.READY: frozenset({S.DISPATCHED, S.AWAITING_APPROVAL, S.SKIPPED, S.FAILED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.DISPATCHED, S.FAILED, S.CANCELLED}),
    S.DISPATCHED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.RETRY_WAIT, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.RETRY_WAIT, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.DISPATCHED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.DISPATCHED}),  # replay from the dead-letter queue: a new attempt
    S.SUCCEEDED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset({S.PENDING}),  # revived when its failed mission is replayed from the dead-letter queue
}

STEP_DONE_OK = frozenset({S.SUCCEEDED, S.SKIPPED})


class IllegalTransition(Exception):
    """A move that the state machine does not allow (the API answers 409)."""

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"{what} cannot go from '{current}' to '{target}'")
        self.current = current
        self.target = target


def _now() -> datetime:
    return datetime.now(UTC)


def move_mission(
    uow: UnitOfWork, mission: Mission, target: MissionStatus, *, event: str | None = None, **data: Any
) -> None:
    current = MissionStatus(mission.status)
    if target not in MISSION_MOVES[current]:
        raise IllegalTransition(f"mission {mission.id}", current, target)
    now = _now()
    mission.status = target
    if target is M.RUNNING and mission.started_at is None:
        mission.started_at = now
        started_workflow = mission.workflow_name
        uow.after_commit(lambda metrics: metrics.prepare_workflow(started_workflow))
    if target is not M.PAUSED:
        mission.pause_reason = None
    if target in MISSION_TERMINAL:
        mission.finished_at = now
        workflow, status = mission.workflow_name, str(target)
        took = max(0.0, (now - mission.created_at).total_seconds()) if mission.created_at else 0.0

        def observe(metrics: EngineMetrics) -> None:
            sample = exemplar()
            metrics.workflow_runs.labels(workflow=workflow, status=status).inc(exemplar=sample)
            metrics.workflow_duration.labels(workflow=workflow).observe(took, exemplar=sample)

        uow.after_commit(observe)
    elif current in MISSION_TERMINAL:
        mission.finished_at = None
    record(uow, mission.id, event or f"mission.{target}", previous=str(current), **data)


def move_step(uow: UnitOfWork, step: Step, target: StepStatus, *, event: str | None = None, **data: Any) -> None:
    current = StepStatus(step.status)
    if target not in STEP_MOVES[current]:
        raise IllegalTransition(f"step '{step.key}'", current, target)
    now = _now()
    step.status = target
    if target is S.DISPATCHED:
        step.dispatched_at = now
        step.started_at = None
        step.finished_at = None
    elif target is S.RUNNING:
        step.started_at = now
    elif target in STEP_TERMINAL or target is S.RETRY_WAIT:
        step.finished_at = now
    record(uow, step.mission_id, event or f"step.{target}", step_key=step.key, attempt=step.attempt, **data)


def record(uow: UnitOfWork, mission_id: Any, event_type: str, *, step_key: str | None = None, **data: Any) -> None:
    """Add a timeline event to the unit of work (committed with the change it describes)."""
    uow.add_event(
        TimelineEventRow(
            mission_id=mission_id,
            ts=_now(),
            type=event_type,
            step_key=step_key,
            data={k: v for k, v in data.items() if v is not None},
            trace_id=current_trace_id() or uow.trace_id,  # each change of a batch keeps its own trace
        )
    )
