"""Apply what workers report (``coo.results``) to steps and missions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.common.contracts import StepStarted, WorkResult
from services.common.db.models import DeadLetter, Mission, Step
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.status import MISSION_TERMINAL, StepStatus
from services.common.telemetry import exemplar
from services.orchestrator.engine import budgets
from services.orchestrator.engine.admission import admit_before_commit
from services.orchestrator.engine.retry import backoff_s
from services.orchestrator.engine.scheduler import (
    advance,
    definition_for,
    error_dict,
    load_steps,
    lock_missions,
    locked_mission,
    work_item,
)
from services.orchestrator.engine.transitions import move_step, record
from services.orchestrator.engine.unit import UnitOfWork

log = get_logger(__name__)

_IN_FLIGHT = (StepStatus.DISPATCHED, StepStatus.RUNNING)


async def lock_batch(uow: UnitOfWork, keys: list[str]) -> None:
    """A batch of results locks its missions in one statement and reads their steps in one more."""
    await lock_missions(uow, [uuid.UUID(key) for key in keys])


async def _steps(uow: UnitOfWork, mission_id: uuid.UUID) -> list[Step]:
    """The mission's steps, read after its lock is granted (a statement that waits for the lock
    keeps its older snapshot for every row but the locked one, so a joined read could see steps as
    they were). Read once per unit of work: while it holds the lock, only its own changes move
    them, and those are made on these very objects (a batch of a fan-out's results reads its 100
    steps once, not once per result)."""
    loaded: dict[uuid.UUID, list[Step]] = uow.memo.setdefault("steps", {})
    if mission_id not in loaded:
        loaded[mission_id] = await load_steps(uow.session, mission_id)
    return loaded[mission_id]


def _observe_schedule_to_start(uow: UnitOfWork, step: Step, started_at: datetime | None) -> None:
    """How long the attempt waited between its dispatch and a worker starting it (both clocks'
    readings: the engine's dispatch time, the worker's start)."""
    if started_at is None or step.dispatched_at is None:
        return
    waited = max(0.0, (started_at - step.dispatched_at).total_seconds())
    agent = step.agent
    uow.after_commit(lambda metrics: metrics.schedule_to_start.labels(agent=agent).observe(waited))


async def apply_started(uow: UnitOfWork, message: StepStarted) -> None:
    mission = await locked_mission(uow, message.mission_id)
    if mission is None:
        return
    steps = await _steps(uow, mission.id)
    step = next((s for s in steps if s.id == message.step_id), None)
    if step is None or step.attempt != message.attempt or step.status != StepStatus.DISPATCHED:
        return  # late or duplicate: the result (or a newer attempt) already moved the step on
    move_step(uow, step, StepStatus.RUNNING, worker=message.worker)
    step.started_at = message.started_at
    _observe_schedule_to_start(uow, step, message.started_at)


async def apply_result(uow: UnitOfWork, settings: Settings, result: WorkResult) -> None:
    session = uow.session
    mission = await locked_mission(uow, result.mission_id)
    if mission is None:
        log.warning("result_for_unknown_mission", mission_id=str(result.mission_id))
        return
    steps = await _steps(uow, mission.id)
    step = next((s for s in steps if s.id == result.step_id), None)
    if step is None or step.attempt != result.attempt or step.status not in _IN_FLIGHT:
        log.info(
            "result_ignored",
            mission_id=str(mission.id),
            step_id=str(result.step_id),
            attempt=result.attempt,
            reason="duplicate or stale attempt",
        )
        return

    if step.status == StepStatus.DISPATCHED and result.worker is not None:
        # A quick attempt reports only its result: it went through running all the same.
        move_step(uow, step, StepStatus.RUNNING, worker=result.worker)
        if result.started_at is not None:
            step.started_at = result.started_at
        _observe_schedule_to_start(uow, step, result.started_at)
    budgets.account(uow, mission, result)
    for event in result.events:  # what happened inside the attempt, in order, before its outcome
        data = {**event.data, "attempt": step.attempt, "at": event.at.isoformat()}
        record(uow, mission.id, event.type, step_key=step.key, **data)

    if result.success:
        step.output = result.output or {}
        step.error = None
        move_step(
            uow,
            step,
            StepStatus.SUCCEEDED,
            result_id=str(result.result_id) if result.result_id else None,
            duration_ms=result.duration_ms,
            model=result.model,
        )
    else:
        error = result.error
        error_type = error.type if error else ErrorType.INTERNAL
        message = error.message if error else "worker reported failure without an error"
        step.error = error_dict(error_type, message, error.detail if error else None)
        retried = error.retried if error else error_type.retryable
        if retried and step.attempt < step.max_attempts:
            definition = await definition_for(session, mission.workflow_id)
            policy = definition.step(step.key).retry
            delay = backoff_s(policy, step.attempt, retry_after_s=error.retry_after_s if error else None)
            step.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
            agent = step.agent
            uow.after_commit(lambda metrics: metrics.retries.labels(agent=agent).inc(exemplar=exemplar()))
            move_step(
                uow,
                step,
                StepStatus.RETRY_WAIT,
                error_type=error_type,
                message=message,
                retry_in_s=round(delay, 3),
            )
        else:
            move_step(uow, step, StepStatus.FAILED, error_type=error_type, message=message)
            await dead_letter_step(uow, mission, step, message, error_type)

    await advance(uow, mission, steps)
    if mission.status in MISSION_TERMINAL:
        admit_before_commit(uow, settings, only_if_queued=True)


async def dead_letter_step(uow: UnitOfWork, mission: Mission, step: Step, message: str, error_type: ErrorType) -> None:
    """Keep the WorkItem of a step that failed for good, linked to the dead letter it was replayed from."""
    session = uow.session
    definition = await definition_for(session, mission.workflow_id)
    item = work_item(mission, step, definition)
    replayed = await session.scalar(
        select(DeadLetter.id)
        .where(DeadLetter.step_id == step.id, DeadLetter.replayed_at.is_not(None))
        .order_by(DeadLetter.replayed_at.desc())
        .limit(1)
    )
    session.add(
        DeadLetter(
            subject=uow.bus.subjects.work(step.agent),
            payload=item.to_bytes(),
            error=message,
            error_type=error_type,
            attempts=step.attempt,
            mission_id=mission.id,
            step_id=step.id,
            replay_of=replayed,
        )
    )
    record(uow, mission.id, "dlq.added", step_key=step.key, attempt=step.attempt, error_type=error_type)
