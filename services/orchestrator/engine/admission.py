"""Admission: at most ``max_active_missions`` run; the rest wait, ordered by (priority, created_at)."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Mission, Step
from services.common.settings import Settings
from services.common.status import MissionStatus
from services.orchestrator.engine.scheduler import advance, load_steps_of
from services.orchestrator.engine.transitions import move_mission
from services.orchestrator.engine.unit import UnitOfWork


class NewMission(NamedTuple):
    """A mission created in this unit of work, with its steps (not inserted until the flush)."""

    mission: Mission
    steps: list[Step]


def new_missions(uow: UnitOfWork) -> dict[uuid.UUID, NewMission]:
    """The missions created in ``uow`` so far, by id."""
    created: dict[uuid.UUID, NewMission] = uow.memo.setdefault("new_missions", {})
    return created


# Any constant shared by every orchestrator replica: serialises admission decisions.
ADMISSION_LOCK = 0x0C00_AD41


_LOCK = select(func.pg_advisory_xact_lock(ADMISSION_LOCK))
_ACTIVE = select(func.count()).select_from(Mission).where(Mission.status == MissionStatus.RUNNING).scalar_subquery()
# The room and the missions that fill it in one statement. It must come after the lock's: a
# statement's snapshot is taken when it starts, and one that waited for the lock would count the
# running missions as they were before the admission it waited for.
_NEXT_QUEUED = (
    select(Mission)
    .where(Mission.status == MissionStatus.QUEUED)
    .order_by(Mission.priority.desc(), Mission.created_at, Mission.id)
    .limit(func.greatest(0, bindparam("max_active") - _ACTIVE))
    .with_for_update(skip_locked=True)
)


async def admit(uow: UnitOfWork, settings: Settings) -> list[uuid.UUID]:
    """Start queued missions while there is room; returns the ids started.

    Missions created in this unit of work and not inserted yet compete with the stored queue by
    the same order (priority, then arrival); those admitted start before their first flush, so
    that they are inserted running, with their first steps dispatched, instead of inserted queued
    and then updated."""
    session = uow.session
    created = [new for new in new_missions(uow).values() if new.mission in session.new]
    if not created:
        await session.execute(_LOCK)
        result = await session.execute(_NEXT_QUEUED, {"max_active": settings.max_active_missions})
        return await _start(uow, list(result.scalars()), {})
    with session.no_autoflush:  # the new missions stay unflushed until they are admitted or not
        await session.execute(_LOCK)
        room = settings.max_active_missions - int(await session.scalar(_RUNNING) or 0)
        if room <= 0:
            return []
        result = await session.execute(_QUEUED_FIRST, {"room": room})
        pending = {new.mission.id: new for new in created if new.mission.status == MissionStatus.QUEUED}
        chosen = sorted(
            [*result.scalars(), *(new.mission for new in pending.values())],
            key=lambda mission: (-mission.priority, mission.created_at, mission.id),
        )[:room]
        return await _start(uow, chosen, pending)


async def _start(uow: UnitOfWork, missions: list[Mission], created: dict[uuid.UUID, NewMission]) -> list[uuid.UUID]:
    """Start ``missions``: the steps of those ``created`` in this unit of work are at hand, the
    others' are read in one statement."""
    stored = await load_steps_of(uow.session, [mission.id for mission in missions if mission.id not in created])
    for mission in missions:
        move_mission(uow, mission, MissionStatus.RUNNING)
        own = created.get(mission.id)
        await advance(uow, mission, own.steps if own is not None else stored.get(mission.id, []))
    return [mission.id for mission in missions]


# With missions of its own not yet inserted, admission needs the room before it picks (it picks
# among the stored queue and its own missions, by the same order).
_RUNNING = select(func.count()).select_from(Mission).where(Mission.status == MissionStatus.RUNNING)
_QUEUED_FIRST = (
    select(Mission)
    .where(Mission.status == MissionStatus.QUEUED)
    .order_by(Mission.priority.desc(), Mission.created_at, Mission.id)
    .limit(bindparam("room"))
    .with_for_update(skip_locked=True)
)

_ANY_QUEUED = select(exists().where(Mission.status == MissionStatus.QUEUED))


def admit_before_commit(uow: UnitOfWork, settings: Settings, *, only_if_queued: bool = False) -> None:
    """Admit queued missions once, just before ``uow`` commits, however many changes asked for it
    (a batch of submissions or of results that end missions runs admission once).

    ``only_if_queued``: skip the admission lock when no queued mission is visible (a mission that
    ended frees a slot only if one waits). A mission queued by a transaction that commits meanwhile
    is admitted by the engine loop's next tick."""

    async def hook(unit: UnitOfWork) -> None:
        if only_if_queued and not await unit.session.scalar(_ANY_QUEUED):
            return
        await admit(unit, settings)

    if only_if_queued and "admit" in uow.before_commit_keys():
        return
    uow.before_commit("admit_if_queued" if only_if_queued else "admit", hook)


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
