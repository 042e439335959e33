"""The engine's periodic work: admission, due retries, and re-publishing lost dispatches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Bus
from services.common.contracts import StepError, WorkResult
from services.common.db.models import AgentResult, Approval, Mission, Step
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.common.results import result_from_row
from services.common.settings import Settings
from services.common.status import ApprovalStatus, MissionStatus, StepStatus
from services.orchestrator.engine.admission import admit
from services.orchestrator.engine.control import expire_approval
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.results import apply_result
from services.orchestrator.engine.scheduler import advance, definition_for, lock_mission, publish_work_item
from services.orchestrator.engine.transitions import record
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.ratelimit import RateLimiter

log = get_logger(__name__)

_GAUGES = text(
    """
    SELECT
      (SELECT count(*) FROM missions WHERE status = 'running') AS active,
      (SELECT count(*) FROM missions WHERE status = 'queued') AS queued,
      COALESCE((SELECT extract(epoch FROM now() - min(created_at)) FROM missions WHERE status = 'queued'), 0)::float8
        AS queued_age,
      (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL) AS dead_letters,
      (SELECT count(*) FROM approvals WHERE status = 'pending') AS approvals,
      COALESCE((SELECT extract(epoch FROM now() - min(created_at)) FROM approvals WHERE status = 'pending'), 0)::float8
        AS approval_age
    """
)


PRUNE_BATCH = 10_000


def _prune(table: str, column: str, keep: str = "true") -> Any:
    """Delete up to ``:batch`` rows of ``table`` older than ``:cutoff`` by ``column`` (oldest first)."""
    return text(
        f"""
        DELETE FROM {table} WHERE ctid IN (
          SELECT ctid FROM {table} WHERE {column} < :cutoff AND NOT ({keep}) ORDER BY {column} LIMIT :batch
        )
        """  # table and column names come from this module, never from input
    )


_PRUNE_AUDIT = _prune("audit_events", "created_at", "false")
# A buffered fire time still waits for its mission: kept until it starts.
_PRUNE_HISTORY = (
    ("schedule_fires", _prune("schedule_fires", "fire_time", "outcome = 'buffered'")),
    ("trigger_deliveries", _prune("trigger_deliveries", "received_at", "false")),
    ("events", _prune("events", "received_at", "false")),
)


class Housekeeper:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        metrics: EngineMetrics | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.metrics = metrics
        self.rate_limiter = rate_limiter
        self._ticks = 0
        # JetStream consumer info is sampled about every 5 s (one API request per stream).
        self._consumer_sample_every = max(1, round(5.0 / settings.engine_tick_s))
        # Old audit events are pruned at the second tick, then about every hour.
        self._audit_prune_every = max(2, round(3600.0 / settings.engine_tick_s))

    def unit(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker, self.bus, metrics=self.metrics)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping_failed")
            await asyncio.sleep(self.settings.engine_tick_s)

    async def tick(self) -> None:
        async with self.unit() as uow:
            await admit(uow, self.settings)
        await self.dispatch_due_retries()
        await self.republish_stale_dispatches()
        await self.settle_overdue_attempts()
        if self.settings.approval_expiry_s > 0:
            await self.expire_approvals()
        await self.refresh_gauges()
        if self._ticks % self._consumer_sample_every == 0:
            await self.sample_consumers()
        self._ticks += 1
        if self.rate_limiter is not None and self._ticks % 60 == 1:
            await self.rate_limiter.prune()
        if self._ticks % self._audit_prune_every == 1:
            if self.settings.audit_retention_days > 0:
                await self.prune_audit()
            if self.settings.trigger_history_days > 0:
                await self.prune_trigger_history()

    async def prune_audit(self) -> int:
        """Delete audit events past ``COO_AUDIT_RETENTION_DAYS``."""
        return await self._prune("audit_events", _PRUNE_AUDIT, self.settings.audit_retention_days)

    async def prune_trigger_history(self) -> int:
        """Delete fire times, deliveries and event ids past ``COO_TRIGGER_HISTORY_DAYS``."""
        days = self.settings.trigger_history_days
        return sum([await self._prune(table, statement, days) for table, statement in _PRUNE_HISTORY])

    async def _prune(self, table: str, statement: Any, days: int) -> int:
        """Delete ``table``'s rows older than ``days``, in bounded batches (any replica may run it:
        deleting the same rows twice is harmless)."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        deleted = 0
        while True:
            async with self.sessionmaker() as session, session.begin():
                params = {"cutoff": cutoff, "batch": PRUNE_BATCH}
                result = cast("CursorResult[Any]", await session.execute(statement, params))
                batch = result.rowcount
            deleted += batch
            if batch < PRUNE_BATCH:
                break
        if deleted:
            log.info("history_pruned", table=table, deleted=deleted, older_than=cutoff.isoformat())
        return deleted

    async def expire_approvals(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.approval_expiry_s)
        async with self.sessionmaker() as session:
            stale = list(
                (
                    await session.execute(
                        select(Approval.id)
                        .where(Approval.status == ApprovalStatus.PENDING, Approval.created_at < cutoff)
                        .order_by(Approval.created_at)
                        .limit(100)
                    )
                ).scalars()
            )
        for approval_id in stale:
            async with self.unit() as uow:
                await expire_approval(uow, self.settings, approval_id)

    async def refresh_gauges(self) -> None:
        """Queue depth, active missions, dead letters and pending approvals, read from Postgres."""
        if self.metrics is None:
            return
        async with self.sessionmaker() as session:
            row = (await session.execute(_GAUGES)).one()
        self.metrics.workflows_active.set(row.active)
        self.metrics.queue_depth.set(row.queued)
        self.metrics.queue_oldest_age.set(row.queued_age)
        self.metrics.dlq_messages.set(row.dead_letters)
        self.metrics.approvals_pending.set(row.approvals)
        self.metrics.approval_oldest_age.set(row.approval_age)

    async def sample_consumers(self) -> None:
        """Backlog (``num_pending``) and redeliveries of every durable consumer of COO's two streams."""
        if self.metrics is None:
            return
        for stream in (self.bus.subjects.work_stream, self.bus.subjects.events_stream):
            try:
                consumers = await self.bus.js.consumers_info(stream)
            except Exception:
                log.warning("consumer_info_unavailable", stream=stream, exc_info=True)
                continue
            for info in consumers:
                labels = {"stream": stream, "consumer": info.name}
                self.metrics.nats_pending.labels(**labels).set(info.num_pending or 0)
                self.metrics.nats_redelivered.labels(**labels).set(info.num_redelivered or 0)

    async def _mission_ids(self, *conditions: object) -> list[uuid.UUID]:
        async with self.sessionmaker() as session:
            result = await session.execute(
                select(Step.mission_id)
                .join(Mission, Mission.id == Step.mission_id)
                .where(Mission.status == MissionStatus.RUNNING, *conditions)  # type: ignore[arg-type]
                .distinct()
                .limit(500)
            )
            return list(result.scalars())

    async def dispatch_due_retries(self) -> None:
        now = datetime.now(UTC)
        for mission_id in await self._mission_ids(Step.status == StepStatus.RETRY_WAIT, Step.next_attempt_at <= now):
            async with self.unit() as uow:
                mission = await lock_mission(uow.session, mission_id)
                if mission is not None:
                    await advance(uow, mission)

    async def republish_stale_dispatches(self) -> None:
        """A step whose WorkItem may never have reached the stream (crash between commit and publish)
        is published again with the same ``Nats-Msg-Id``; workers answer an attempt already done
        from its stored result, so nothing runs twice to completion."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.dispatch_stale_s)
        for mission_id in await self._mission_ids(Step.status == StepStatus.DISPATCHED, Step.dispatched_at < cutoff):
            async with self.unit() as uow:
                mission = await lock_mission(uow.session, mission_id)
                if mission is None or mission.status != MissionStatus.RUNNING:
                    continue
                definition = await definition_for(uow.session, mission.workflow_id)
                result = await uow.session.execute(
                    select(Step).where(
                        Step.mission_id == mission_id,
                        Step.status == StepStatus.DISPATCHED,
                        Step.dispatched_at < cutoff,
                    )
                )
                for step in result.scalars():
                    step.dispatched_at = datetime.now(UTC)
                    publish_work_item(uow, mission, step, definition)
                    record(uow, mission.id, "step.redispatched", step_key=step.key, attempt=step.attempt)

    async def settle_overdue_attempts(self) -> None:
        """An attempt with no outcome long after its timeout (a result lost, a worker gone) is settled:
        from its stored result when the worker persisted one, else — once it had started running —
        as a TIMEOUT, which the retry policy then handles like any other failure. A ``dispatched``
        attempt with no stored result never reached a worker, as far as anyone knows: it is left to
        :meth:`republish_stale_dispatches`, so the attempt is published again rather than counted
        as timed out (which would spend a retry on an attempt that never ran)."""
        grace = timedelta(seconds=self.settings.dispatch_stale_s)
        overdue = Step.dispatched_at + func.make_interval(0, 0, 0, 0, 0, 0, Step.timeout_s) + grace < func.now()
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Step.mission_id, Step.id, Step.attempt, Step.status)
                    .join(Mission, Mission.id == Step.mission_id)
                    .where(
                        Mission.status == MissionStatus.RUNNING,
                        Step.status.in_((StepStatus.DISPATCHED, StepStatus.RUNNING)),
                        overdue,
                    )
                    .limit(500)
                )
            ).all()
            stored = (
                {
                    (row.step_id, row.attempt): row
                    for row in (
                        await session.execute(
                            select(AgentResult).where(
                                tuple_(AgentResult.step_id, AgentResult.attempt).in_([(r.id, r.attempt) for r in rows])
                            )
                        )
                    ).scalars()
                }
                if rows
                else {}
            )
        for mission_id, step_id, attempt, status in rows:
            kept = stored.get((step_id, attempt))
            if kept is None and status == StepStatus.DISPATCHED:
                continue
            outcome = (
                result_from_row(mission_id, kept)
                if kept is not None
                else WorkResult(
                    mission_id=mission_id,
                    step_id=step_id,
                    attempt=attempt,
                    result_id=None,
                    success=False,
                    error=StepError(
                        type=ErrorType.TIMEOUT,
                        message="no outcome from any worker within the step's timeout (and a grace period)",
                    ),
                )
            )
            log.warning(
                "overdue_attempt_settled", step_id=str(step_id), attempt=attempt, from_stored_result=kept is not None
            )
            async with self.unit() as uow:
                await apply_result(uow, self.settings, outcome)
