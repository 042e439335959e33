"""Schedules fire: missions at fire times, each fire time once, across replicas and restarts.

Every orchestrator replica runs a ``ScheduleRunner``. It takes one due schedule at a time under its
row lock (``FOR UPDATE SKIP LOCKED``: replicas share the due schedules, never the same one) and, in
the same transaction, handles its fire times: each becomes a ``schedule_fires`` row whose unique
key (schedule, fire time) makes it happen once whatever races, and, by the overlap policy, a new
mission in that transaction. The schedule's ``next_fire_at`` moves past the fire times handled, so
after a restart the runner starts where the schedule stopped:

- fire times missed while no orchestrator ran and still inside ``catchup_window_s`` run late (their
  lag is measured); older ones are recorded as ``missed`` (at most ``MAX_MISSED`` at a time, the
  oldest first; any beyond are skipped over, and the log says how the gap was closed);
- a paused schedule handles nothing; resuming it starts from the next fire time after the resume.

Overlap policies (Temporal's): ``skip`` records a fire time as skipped while the schedule's last
mission is still active (queued, running or paused); ``buffer_one`` keeps one such fire time and
starts it when that mission ends (a second one while one waits is skipped); ``allow_all`` starts
every fire time; ``cancel_other`` cancels the active mission and starts the new one. Backfills and
manual triggers go through the same policy.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, not_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Bus
from services.common.contracts import Control, ControlAction
from services.common.db.models import Mission, Schedule, ScheduleFire
from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.status import MISSION_TERMINAL, FireKind, FireOutcome, MissionStatus, Overlap, TriggerType
from services.orchestrator.engine.cadence import Cadence, jitter
from services.orchestrator.engine.control import carry_out, check_control
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.missions import MissionSpec, start_mission
from services.orchestrator.engine.scheduler import load_steps, lock_mission
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import OrchestratorError

log = get_logger(__name__)

MAX_MISSED = 100  # missed fire times recorded one by one per pass; the log tells of any gap beyond
MAX_FIRES_PER_PASS = 100  # fire times started per schedule per transaction (a long catch-up takes several)
_ACTIVE = tuple(status.value for status in MissionStatus if status not in MISSION_TERMINAL)


@dataclass(frozen=True)
class Fire:
    """A fire time and what became of it."""

    fire_time: datetime
    kind: str
    outcome: str
    mission_id: uuid.UUID | None = None
    error: str | None = None


def cadence_of(schedule: Schedule) -> Cadence:
    return Cadence(cron=schedule.cron, interval_s=schedule.interval_s, timezone=schedule.timezone)


def set_next_fire(schedule: Schedule, after: datetime, cadence: Cadence | None = None) -> None:
    """Point ``schedule`` at its first fire time after ``after``, with that fire time's jitter."""
    fire = (cadence or cadence_of(schedule)).after(after)
    schedule.next_fire_at = fire
    schedule.next_due_at = fire + jitter(schedule.id, fire, schedule.jitter_s)


def _due(now: datetime) -> Any:
    """Schedules with work: a fire time due, or a buffered one whose blocking mission has ended."""
    blocking = exists().where(Mission.id == Schedule.last_mission_id, Mission.status.in_(_ACTIVE))
    return and_(
        not_(Schedule.paused),
        or_(Schedule.next_due_at <= now, and_(Schedule.buffered_fire_at.is_not(None), not_(blocking))),
    )


async def lock_due_schedule(session: AsyncSession, now: datetime, passed: set[uuid.UUID]) -> Schedule | None:
    query = select(Schedule).where(_due(now)).order_by(Schedule.next_due_at).limit(1)
    if passed:
        query = query.where(Schedule.id.not_in(passed))
    return (await session.execute(query.with_for_update(skip_locked=True))).scalar_one_or_none()


async def fire_due(uow: UnitOfWork, settings: Settings, schedule: Schedule, now: datetime) -> list[Fire]:
    """Handle what is due of ``schedule`` (its row locked): a buffered fire time whose blocking
    mission has ended, missed fire times, and the fire times due by ``now``."""
    fires: list[Fire] = []
    if schedule.buffered_fire_at is not None and not await _blocked(uow, schedule):
        fires.append(await _start_buffered(uow, settings, schedule))
    if schedule.paused or schedule.next_due_at > now:
        return fires
    cadence = cadence_of(schedule)
    window_start = now - timedelta(seconds=schedule.catchup_window_s)
    fire_time = schedule.next_fire_at
    missed: list[datetime] = []
    while fire_time < window_start and len(missed) < MAX_MISSED:
        missed.append(fire_time)
        fire_time = cadence.after(fire_time)
    if fire_time < window_start:
        gap_end = fire_time
        fire_time = cadence.after(window_start - timedelta(microseconds=1))
        log.warning(
            "schedule_fire_times_skipped_over",
            schedule=schedule.name,
            recorded_missed=len(missed),
            skipped_from=gap_end.isoformat(),
            skipped_until=fire_time.isoformat(),
        )
    for moment in missed:
        fires.append(await _record(uow, schedule, moment, FireKind.SCHEDULED, FireOutcome.MISSED))
    handled = 0
    while fire_time + jitter(schedule.id, fire_time, schedule.jitter_s) <= now and handled < MAX_FIRES_PER_PASS:
        fires.append(await fire(uow, settings, schedule, fire_time, FireKind.SCHEDULED))
        fire_time = cadence.after(fire_time)
        handled += 1
    schedule.next_fire_at = fire_time
    schedule.next_due_at = fire_time + jitter(schedule.id, fire_time, schedule.jitter_s)
    return fires


async def fire(uow: UnitOfWork, settings: Settings, schedule: Schedule, fire_time: datetime, kind: FireKind) -> Fire:
    """One fire time of ``schedule`` (its row locked), once: by its overlap policy, a mission, a
    skip or a buffered fire. A fire time that has happened already is answered as it was."""
    claimed = await _claim(uow.session, schedule.id, fire_time, kind)
    if not claimed:
        row = (
            await uow.session.execute(
                select(ScheduleFire).where(ScheduleFire.schedule_id == schedule.id, ScheduleFire.fire_time == fire_time)
            )
        ).scalar_one()
        return Fire(row.fire_time, row.kind, row.outcome, row.mission_id, row.error)
    overlap = Overlap(schedule.overlap)
    if overlap is not Overlap.ALLOW_ALL and await _blocked(uow, schedule):
        if overlap is Overlap.SKIP or (overlap is Overlap.BUFFER_ONE and schedule.buffered_fire_at is not None):
            return await _settle(uow, schedule, fire_time, kind, FireOutcome.SKIPPED)
        if overlap is Overlap.BUFFER_ONE:
            schedule.buffered_fire_at = fire_time
            return await _settle(uow, schedule, fire_time, kind, FireOutcome.BUFFERED)
        assert schedule.last_mission_id is not None
        await _cancel_other(uow, settings, schedule, schedule.last_mission_id)
    return await _start(uow, settings, schedule, fire_time, kind)


async def _start(uow: UnitOfWork, settings: Settings, schedule: Schedule, fire_time: datetime, kind: str) -> Fire:
    spec = MissionSpec(
        workflow=schedule.workflow,
        version=schedule.workflow_version,
        input=schedule.input,
        caller=f"schedule:{schedule.name}",
        priority=schedule.priority,
        budget_usd=schedule.budget_usd,
        budget_tokens=schedule.budget_tokens,
        trigger={"type": TriggerType.SCHEDULE.value, "name": schedule.name, "fire_time": _iso(fire_time)},
    )
    try:
        mission = await start_mission(uow, settings, spec)
    except OrchestratorError as refused:
        log.warning("schedule_fire_failed", schedule=schedule.name, fire_time=_iso(fire_time), error=refused.message)
        return await _settle(uow, schedule, fire_time, kind, FireOutcome.FAILED, error=refused.message)
    schedule.last_mission_id = mission.id
    uow.memo.setdefault("active_missions", set()).add(mission.id)
    if kind == FireKind.SCHEDULED:
        due = fire_time + jitter(schedule.id, fire_time, schedule.jitter_s)
        lag = max(0.0, (datetime.now(UTC) - due).total_seconds())
        name = schedule.name
        uow.after_commit(lambda metrics: metrics.schedule_lag.labels(schedule=name).observe(lag))
    return await _settle(uow, schedule, fire_time, kind, FireOutcome.STARTED, mission_id=mission.id)


async def _start_buffered(uow: UnitOfWork, settings: Settings, schedule: Schedule) -> Fire:
    fire_time = schedule.buffered_fire_at
    assert fire_time is not None
    schedule.buffered_fire_at = None
    kind = await uow.session.scalar(
        select(ScheduleFire.kind).where(ScheduleFire.schedule_id == schedule.id, ScheduleFire.fire_time == fire_time)
    )
    return await _start(uow, settings, schedule, fire_time, kind or FireKind.SCHEDULED)


async def _blocked(uow: UnitOfWork, schedule: Schedule) -> bool:
    """The schedule's last mission is still active (queued, running or paused)."""
    if schedule.last_mission_id is None:
        return False
    if schedule.last_mission_id in uow.memo.get("active_missions", ()):
        return True  # started in this transaction
    status = await uow.session.scalar(select(Mission.status).where(Mission.id == schedule.last_mission_id))
    return status in _ACTIVE


async def _cancel_other(uow: UnitOfWork, settings: Settings, schedule: Schedule, mission_id: uuid.UUID) -> None:
    """``cancel_other``: cancel the schedule's active mission, as an operator's cancel would."""
    mission = await lock_mission(uow.session, mission_id)
    if mission is None or mission.status in MISSION_TERMINAL:
        return
    control = Control(
        mission_id=mission.id,
        action=ControlAction.CANCEL,
        actor=f"schedule:{schedule.name}",
        reason=f"schedule '{schedule.name}' started a new mission (overlap policy cancel_other)",
    )
    steps = await load_steps(uow.session, mission.id)
    check_control(mission, steps, control)
    control_id = uuid.uuid4().hex
    await carry_out(uow, settings, mission, steps, None, control, control_id)
    uow.publish_after_commit(uow.bus.subjects.control(mission.id), control.to_bytes(), msg_id=f"control:{control_id}")


async def _claim(session: AsyncSession, schedule_id: uuid.UUID, fire_time: datetime, kind: str) -> bool:
    """Insert the fire time's row (provisionally ``started``); False when it exists already."""
    inserted = await session.execute(
        insert(ScheduleFire)
        .values(schedule_id=schedule_id, fire_time=fire_time, kind=kind, outcome=FireOutcome.STARTED)
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        .returning(ScheduleFire.id)
    )
    return inserted.scalar_one_or_none() is not None


async def _record(uow: UnitOfWork, schedule: Schedule, fire_time: datetime, kind: str, outcome: FireOutcome) -> Fire:
    """A fire time with no mission (missed): claimed and settled at once."""
    if not await _claim(uow.session, schedule.id, fire_time, kind):
        return Fire(fire_time, kind, outcome)
    return await _settle(uow, schedule, fire_time, kind, outcome)


async def _settle(
    uow: UnitOfWork,
    schedule: Schedule,
    fire_time: datetime,
    kind: str,
    outcome: FireOutcome,
    *,
    mission_id: uuid.UUID | None = None,
    error: str | None = None,
) -> Fire:
    await uow.session.execute(
        ScheduleFire.__table__.update()  # type: ignore[attr-defined]
        .where(ScheduleFire.schedule_id == schedule.id, ScheduleFire.fire_time == fire_time)
        .values(outcome=outcome, mission_id=mission_id, error=error, updated_at=func.now())
    )
    name = schedule.name
    uow.after_commit(lambda metrics: metrics.schedule_fires.labels(schedule=name, outcome=outcome.value).inc())
    return Fire(fire_time, kind, outcome, mission_id, error)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ScheduleRunner:
    """The engine loop that fires due schedules; sleeps until the next one is due (at most a tick)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.metrics = metrics

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
                delay = await self._until_next_due()
            except Exception:
                log.exception("schedule_pass_failed")
                delay = self.settings.engine_tick_s
            await asyncio.sleep(delay)

    async def pass_once(self) -> list[Fire]:
        """Fire every schedule due now, one transaction each; what became of their fire times."""
        fires: list[Fire] = []
        passed: set[uuid.UUID] = set()
        while True:
            now = datetime.now(UTC)
            async with UnitOfWork(self.sessionmaker, self.bus, metrics=self.metrics) as uow:
                schedule = await lock_due_schedule(uow.session, now, passed)
                if schedule is None:
                    return fires
                passed.add(schedule.id)
                if self.metrics is not None:
                    self.metrics.prepare_schedule(schedule.name)
                fires.extend(await fire_due(uow, self.settings, schedule, now))

    async def _until_next_due(self) -> float:
        async with self.sessionmaker() as session:
            next_due = await session.scalar(select(func.min(Schedule.next_due_at)).where(not_(Schedule.paused)))
        tick = self.settings.engine_tick_s
        if next_due is None:
            return tick
        return min(tick, max(0.01, (next_due - datetime.now(UTC)).total_seconds()))
