"""Before running a work item: is its attempt still wanted? Paused missions wait, stale or
cancelled attempts are dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.contracts import WorkItem
from services.common.db.models import Mission, Step

_STEP_IN_FLIGHT = frozenset({"dispatched", "running"})


@dataclass(frozen=True)
class Verdict:
    action: Literal["run", "wait", "drop"]
    reason: str = ""


async def admit_work(sessionmaker: async_sessionmaker[AsyncSession], item: WorkItem) -> Verdict:
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(Mission.status, Mission.pause_reason, Step.status, Step.attempt)
                .join(Step, Step.mission_id == Mission.id)
                .where(Step.id == item.step_id, Mission.id == item.mission_id)
            )
        ).one_or_none()
    if row is None:
        return Verdict("drop", "its mission or step no longer exists")
    mission_status, pause_reason, step_status, attempt = row
    if mission_status == "paused":
        return Verdict("wait", f"mission is paused ({pause_reason or 'manual'})")
    if mission_status != "running":
        return Verdict("drop", f"mission is {mission_status}")
    if attempt != item.attempt:
        return Verdict("drop", f"the step is at attempt {attempt}, this work item is attempt {item.attempt}")
    if step_status not in _STEP_IN_FLIGHT:
        return Verdict("drop", f"the step is {step_status}")
    return Verdict("run")
