"""Unit of work: one transaction, its timeline events, and the messages to publish after commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Bus
from services.common.contracts import TimelineEvent
from services.common.db.models import TimelineEventRow
from services.common.logging import get_logger
from services.common.scrub import scrub
from services.common.telemetry import current_trace_id
from services.orchestrator.engine.metrics import EngineMetrics

log = get_logger(__name__)

# Core, every column given for every row (``step_key`` too when it is NULL): one multi-row INSERT
# per unit of work, however its events alternate between mission and step events.
_EVENTS = cast(Table, TimelineEventRow.__table__)
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)


@dataclass(frozen=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str | None = None
    headers: dict[str, str] | None = None


@dataclass
class UnitOfWork:
    """``async with UnitOfWork(sessionmaker, bus) as uow:`` — commits on success, then publishes."""

    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    trace_id: str | None = None  # default: the trace the unit of work runs in
    metrics: EngineMetrics | None = None
    session: AsyncSession = field(init=False)
    _events: list[TimelineEventRow] = field(default_factory=list, init=False)
    _outgoing: list[Outgoing] = field(default_factory=list, init=False)
    _observations: list[Callable[[EngineMetrics], None]] = field(default_factory=list, init=False)
    memo: dict[str, Any] = field(default_factory=dict, init=False)  # reads shared by the unit's changes
    _before_commit: dict[str, Callable[[UnitOfWork], Awaitable[None]]] = field(default_factory=dict, init=False)
    commit_sent: bool = field(default=False, init=False)  # past this, a failure may still have committed

    async def __aenter__(self) -> UnitOfWork:
        if self.trace_id is None:
            self.trace_id = current_trace_id()
        self.session = self.sessionmaker()
        await self.session.begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is not None:
                await self.session.rollback()
                return
            for hook in self._before_commit.values():
                await hook(self)
            if self._events:
                await self._insert_events()
            self.commit_sent = True
            await self.session.commit()
        finally:
            await self.session.close()
        self._observe()
        await self._publish()

    async def _insert_events(self) -> None:
        """One multi-row INSERT for the unit's events (their ids come back in order), with no
        unit-of-work bookkeeping per event; pending changes are flushed first, so new missions
        exist before their events."""
        await self.session.flush()
        rows = [
            {
                "mission_id": e.mission_id,
                "ts": e.ts,
                "type": e.type,
                "step_key": e.step_key,
                "data": scrub(e.data),
                "trace_id": e.trace_id,
            }
            for e in self._events
        ]
        connection = await self.session.connection()
        ids = (await connection.execute(_INSERT_EVENTS, rows)).scalars().all()
        for event, row, event_id in zip(self._events, rows, ids, strict=True):
            event.id, event.data = event_id, row["data"]

    def add_event(self, event: TimelineEventRow) -> None:
        self._events.append(event)

    def before_commit(self, key: str, hook: Callable[[UnitOfWork], Awaitable[None]]) -> None:
        """Run ``hook`` once before the commit, however many times it is asked for under ``key``
        (a batch of results that end several missions admits queued ones once)."""
        self._before_commit.setdefault(key, hook)

    def before_commit_keys(self) -> frozenset[str]:
        return frozenset(self._before_commit)

    def after_commit(self, observe: Callable[[EngineMetrics], None]) -> None:
        """Record a metric observation once (and only if) the transaction commits."""
        self._observations.append(observe)

    def _observe(self) -> None:
        if self.metrics is None:
            return
        for observe in self._observations:
            try:
                observe(self.metrics)
            except Exception:
                log.exception("metric_observation_failed")

    def publish_after_commit(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._outgoing.append(Outgoing(subject, payload, msg_id, headers))

    async def _publish(self) -> None:
        """Publish after commit. A lost publish is repaired by the engine loop (stale dispatch)."""

        async def publish(out: Outgoing) -> None:
            try:
                await self.bus.publish(out.subject, out.payload, msg_id=out.msg_id, headers=out.headers)
            except Exception:
                log.exception("publish_after_commit_failed", subject=out.subject, msg_id=out.msg_id)

        if len(self._outgoing) == 1:
            await publish(self._outgoing[0])
        elif self._outgoing:  # independent messages: wait for their acks together
            await asyncio.gather(*(publish(out) for out in self._outgoing))
        for event in self._events:
            try:
                message = TimelineEvent(
                    id=event.id,
                    mission_id=event.mission_id,
                    ts=event.ts,
                    type=event.type,
                    step_key=event.step_key,
                    data=event.data,
                    trace_id=event.trace_id,
                )
                await self.bus.publish_core(self.bus.subjects.timeline(event.mission_id), message.to_bytes())
            except Exception as exc:
                # Timeline fan-out is best effort: the row is committed and readable via the API.
                log.warning("timeline_fanout_failed", mission_id=str(event.mission_id), error=str(exc))
