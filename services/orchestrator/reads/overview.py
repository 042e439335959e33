"""Reads only the console shows: step progress per mission, a mission's trace window, and what
the navigation points out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from services.common.db.models import AlertRow, DeadLetter, Mission, Step
from services.common.status import StepStatus
from services.orchestrator.state import OrchestratorState

_DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return 0 if self.total == 0 else self.done * 100 // self.total


@dataclass(frozen=True)
class MissionTrace:
    traceparent: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Attention:
    """What the navigation points out: dead letters not replayed yet, alerts firing."""

    dead_letters: int
    firing_alerts: int


async def step_progress(state: OrchestratorState, mission_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Progress]:
    """Steps finished (succeeded or skipped) out of all steps, per mission."""
    if not mission_ids:
        return {}
    query = (
        select(
            Step.mission_id,
            func.count(),
            func.count().filter(Step.status.in_(_DONE)),
        )
        .where(Step.mission_id.in_(list(mission_ids)))
        .group_by(Step.mission_id)
    )
    async with state.sessionmaker() as session:
        rows = (await session.execute(query)).all()
    found = {mission_id: Progress(done=int(done), total=int(total)) for mission_id, total, done in rows}
    return {mission_id: found.get(mission_id, Progress(0, 0)) for mission_id in mission_ids}


async def mission_trace(state: OrchestratorState, mission_id: uuid.UUID) -> MissionTrace | None:
    async with state.sessionmaker() as session:
        row = (
            await session.execute(
                select(Mission.traceparent, Mission.created_at, Mission.finished_at).where(Mission.id == mission_id)
            )
        ).one_or_none()
    return None if row is None else MissionTrace(row[0], row[1], row[2])


async def attention(state: OrchestratorState) -> Attention:
    async with state.sessionmaker() as session:
        letters = await session.scalar(select(func.count()).where(DeadLetter.replayed_at.is_(None)))
        resolved = aliased(AlertRow)
        ended = (
            select(resolved.id)
            .where(
                resolved.fingerprint == AlertRow.fingerprint,
                resolved.starts_at == AlertRow.starts_at,
                resolved.status == "resolved",
            )
            .exists()
        )
        firing = await session.scalar(
            select(func.count(func.distinct(AlertRow.fingerprint))).where(AlertRow.status == "firing", ~ended)
        )
    return Attention(dead_letters=int(letters or 0), firing_alerts=int(firing or 0))
