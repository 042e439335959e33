"""Admission: at most ``max_active_missions`` run; the rest wait, ordered by (priority, created_at)."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Mission
from services.common.settings import Settings
from services.orchestrator.engine.scheduler import advance, load_steps_of
from services.orchestrator.engine.transitions import MissionStatus, move_mission
from services.orchestrator.engine.unit import UnitOfWork

# Any constant shared by every orchestrator replica: serialises admission decisions.
ADMISSION_LOCK = 0x0C00_AD41


_LOCK = select(func.pg_advisory_xact_lock(ADMISSION_LOCK))
_ACTIVE = select(func.count()).select_from(Mission).where(Mission.status == MissionStatus.RUNNING)
_NEXT_QUEUED = (
    select(Mission)
    .where(Mission.status == MissionStatus.QUEUED)
    .order_by(Mission.priority.desc(), Mission.created_at, Mission.id)
    .limit(bindparam("room"))
    .with_for_update(skip_locked=True)
)


async def admit(uow: UnitOfWork, settings: Settings) -> list[uuid.UUID]:
    """Start queued missions while there is room; returns the ids started."""
    session = uow.session
    await session.execute(_LOCK)
    active = await session.scalar(_ACTIVE)
    room = settings.max_active_missions - int(active or 0)
    if room <= 0:
        return []
    result = await session.execute(_NEXT_QUEUED, {"room": room})
    missions = list(result.scalars())
    steps = await load_steps_of(session, [mission.id for mission in missions])
    for mission in missions:
        move_mission(uow, mission, MissionStatus.RUNNING)
        await advance(uow, mission, steps.get(mission.id, []))
    return [mission.id for mission in missions]


def admit_before_commit(uow: UnitOfWork, settings: Settings) -> None:
    """Admit queued missions once, just before ``uow`` commits, however many changes asked for it
    (a batch of submissions or of results that end missions runs admission once)."""

    async def hook(unit: UnitOfWork) -> None:
        await admit(unit, settings)

    uow.before_commit("admit", hook)


async def queue_position(session: AsyncSession, mission: Mission) -> int | None:
    """1-based place in the admission queue, or None when the mission is not queued."""
    if mission.status != MissionStatus.QUEUED:
        return None
    ahead = await session.scalar(
        select(func.count())
        .select_from(Mission)
        .where(
            Mission.status == MissionStatus.QUEUED,
            or_(
                Mission.priority > mission.priority,
                and_(
                    Mission.priority == mission.priority,
                    or_(
                        Mission.created_at < mission.created_at,
                        and_(Mission.created_at == mission.created_at, Mission.id < mission.id),
                    ),
                ),
            ),
        )
    )
    return int(ahead or 0) + 1
