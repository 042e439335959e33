"""Reads of schedules: each with its next fire times and its latest fire times' outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Schedule, ScheduleFire
from services.common.money import Money
from services.orchestrator.engine.cadence import Cadence
from services.orchestrator.errors import NotFound
from services.orchestrator.state import OrchestratorState

FIRES_SHOWN = 10  # latest fire times shown with one schedule
FIRES_LISTED = 3  # ... with each schedule of the list
NEXT_FIRES = 5


class FireOut(BaseModel):
    fire_time: datetime
    kind: str
    outcome: str
    mission_id: uuid.UUID | None
    error: str | None


class ScheduleOut(BaseModel):
    name: str
    workflow: str
    version: int | None
    cron: str | None
    interval_s: float | None
    timezone: str
    input: dict[str, Any]
    overlap: str
    catchup_window_s: float
    jitter_s: float
    paused: bool
    priority: int
    budget_usd: Money | None
    budget_tokens: int | None
    next_fire_times: list[datetime]
    buffered_fire_time: datetime | None
    recent_fires: list[FireOut]
    caller: str
    created_at: datetime
    updated_at: datetime


def schedule_out(schedule: Schedule, fires: Sequence[FireOut]) -> ScheduleOut:
    """``schedule`` as the API shows it: no next fire times while it is paused."""
    next_times: list[datetime] = []
    if not schedule.paused:
        cadence = Cadence(cron=schedule.cron, interval_s=schedule.interval_s, timezone=schedule.timezone)
        first = max(schedule.next_fire_at, datetime.now(UTC))
        next_times = [schedule.next_fire_at] if schedule.next_fire_at >= first else []
        next_times += cadence.upcoming(next_times[-1] if next_times else first, NEXT_FIRES - len(next_times))
    return ScheduleOut(
        name=schedule.name,
        workflow=schedule.workflow,
        version=schedule.workflow_version,
        cron=schedule.cron,
        interval_s=schedule.interval_s,
        timezone=schedule.timezone,
        input=schedule.input,
        overlap=schedule.overlap,
        catchup_window_s=schedule.catchup_window_s,
        jitter_s=schedule.jitter_s,
        paused=schedule.paused,
        priority=schedule.priority,
        budget_usd=schedule.budget_usd,
        budget_tokens=schedule.budget_tokens,
        next_fire_times=next_times,
        buffered_fire_time=schedule.buffered_fire_at,
        recent_fires=list(fires),
        caller=schedule.caller,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


async def recent_fires(
    session: AsyncSession, schedule_ids: Sequence[uuid.UUID], per_schedule: int
) -> dict[uuid.UUID, list[FireOut]]:
    """The latest ``per_schedule`` fire times of each schedule, newest first, in one statement."""
    if not schedule_ids:
        return {}
    rank = func.row_number().over(partition_by=ScheduleFire.schedule_id, order_by=ScheduleFire.fire_time.desc())
    ranked = select(ScheduleFire, rank.label("rank")).where(ScheduleFire.schedule_id.in_(schedule_ids)).subquery()
    rows = await session.execute(
        select(ranked).where(ranked.c.rank <= per_schedule).order_by(ranked.c.schedule_id, ranked.c.fire_time.desc())
    )
    fires: dict[uuid.UUID, list[FireOut]] = {}
    for row in rows:
        fires.setdefault(row.schedule_id, []).append(
            FireOut(
                fire_time=row.fire_time, kind=row.kind, outcome=row.outcome, mission_id=row.mission_id, error=row.error
            )
        )
    return fires


async def list_schedules(state: OrchestratorState) -> list[ScheduleOut]:
    """Every schedule by name, each with its latest few fire times."""
    async with state.reads() as session:
        schedules = list((await session.execute(select(Schedule).order_by(Schedule.name))).scalars())
        fires = await recent_fires(session, [s.id for s in schedules], FIRES_LISTED)
    return [schedule_out(s, fires.get(s.id, [])) for s in schedules]


async def read_schedule(state: OrchestratorState, name: str, fires: int = FIRES_SHOWN) -> ScheduleOut:
    """One schedule with its latest ``fires`` fire times (404 when unknown)."""
    async with state.reads() as session:
        schedule = (await session.execute(select(Schedule).where(Schedule.name == name))).scalar_one_or_none()
        if schedule is None:
            raise NotFound(f"schedule '{name}' not found", field="name")
        recent = await recent_fires(session, [schedule.id], fires)
    return schedule_out(schedule, recent.get(schedule.id, []))
