"""Replaying dead letters: a step that failed for good gets one new attempt (its mission revives);
a message that could not be decoded is published again to its subject."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from services.common.db.models import DeadLetter
from services.common.deadletters import REPLAY_OF_HEADER
from services.common.status import MissionStatus, StepStatus
from services.orchestrator.engine.scheduler import advance, definition_for, dispatch, load_steps, lock_mission
from services.orchestrator.engine.transitions import move_mission, move_step, record
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import Conflict, NotFound


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: uuid.UUID
    mission_id: uuid.UUID | None
    step_key: str | None
    attempt: int | None
    subject: str


async def replay(uow: UnitOfWork, dead_letter_id: uuid.UUID, actor: str) -> Replayed:
    session = uow.session
    letter = (
        await session.execute(select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update())
    ).scalar_one_or_none()
    if letter is None:
        raise NotFound(f"dead letter {dead_letter_id} not found", field="id")
    if letter.replayed_at is not None:
        raise Conflict(f"dead letter {dead_letter_id} was already replayed at {letter.replayed_at.isoformat()}")
    letter.replayed_at = datetime.now(UTC)
    if letter.step_id is None or letter.mission_id is None:
        headers = {str(k): str(v) for k, v in (letter.headers or {}).items() if k != "Nats-Msg-Id"}
        headers[REPLAY_OF_HEADER] = str(letter.id)
        uow.publish_after_commit(letter.subject, letter.payload, headers=headers)
        return Replayed(letter.id, None, None, None, letter.subject)

    mission = await lock_mission(session, letter.mission_id)
    if mission is None:
        raise NotFound(f"mission {letter.mission_id} of dead letter {letter.id} no longer exists")
    steps = await load_steps(session, mission.id)
    step = next((s for s in steps if s.id == letter.step_id), None)
    if step is None:
        raise NotFound(f"the step of dead letter {letter.id} no longer exists")
    if step.status != StepStatus.FAILED:
        raise Conflict(f"step '{step.key}' is {step.status}: only a failed step can be replayed")
    if mission.status not in (MissionStatus.FAILED, MissionStatus.RUNNING):
        raise Conflict(f"mission {mission.id} is {mission.status}: its dead letters cannot be replayed")

    if mission.status == MissionStatus.FAILED:
        mission.error = None
        move_mission(uow, mission, MissionStatus.RUNNING, reason="dead letter replayed", actor=actor)
        for other in steps:
            if other.status == StepStatus.CANCELLED:
                move_step(uow, other, StepStatus.PENDING, reason="mission revived by a replay")
    step.error = None
    definition = await definition_for(session, mission.workflow_id)
    dispatch(uow, mission, step, definition)
    record(
        uow,
        mission.id,
        "dlq.replayed",
        step_key=step.key,
        attempt=step.attempt,
        dead_letter=str(letter.id),
        actor=actor,
    )
    await advance(uow, mission, steps)
    return Replayed(letter.id, mission.id, step.key, step.attempt, letter.subject)
