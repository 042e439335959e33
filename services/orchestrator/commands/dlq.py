"""Replaying a dead letter: a new attempt of its step, or its message published again."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from services.orchestrator.engine import dlq
from services.orchestrator.state import OrchestratorState


class ReplayAnswer(BaseModel):
    dead_letter_id: uuid.UUID
    mission_id: uuid.UUID | None
    step_key: str | None
    attempt: int | None
    subject: str


async def replay_letter(state: OrchestratorState, dead_letter_id: uuid.UUID, actor: str) -> ReplayAnswer:
    """Replay one dead letter for ``actor``, or raise ``NotFound`` / ``Conflict``."""
    async with state.unit() as uow:
        done = await dlq.replay(uow, dead_letter_id, actor)
    return ReplayAnswer(
        dead_letter_id=done.dead_letter_id,
        mission_id=done.mission_id,
        step_key=done.step_key,
        attempt=done.attempt,
        subject=done.subject,
    )
