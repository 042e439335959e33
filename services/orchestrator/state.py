"""The orchestrator's lifespan state: one typed object, yielded by the lifespan under ``coo`` and
reached by routes, console pages and the audit trail through ``state_of``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from prometheus_client import CollectorRegistry
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from services.common.bus import Bus
from services.common.db.group_insert import GroupInsert
from services.common.db.models import AuditEvent
from services.common.settings import Settings
from services.orchestrator.auth import KeyStore
from services.orchestrator.engine.batch import UnitBatcher
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.results import lock_batch
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.notify.alerts import AlertDelivery
from services.orchestrator.ratelimit import RateLimiter


@dataclass
class OrchestratorState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    registry: CollectorRegistry
    metrics: EngineMetrics
    rate_limiter: RateLimiter
    reads: async_sessionmaker[AsyncSession] = field(init=False)  # autocommit: no BEGIN/ROLLBACK per read
    submissions: UnitBatcher = field(init=False)  # new missions, committed together when they arrive together
    results: UnitBatcher = field(init=False)  # what workers report, likewise
    keys: KeyStore = field(init=False)  # API keys: COO_API_KEYS and the stored ones
    audit: GroupInsert = field(init=False)  # audit rows of calls answered together, in one commit
    alerts: AlertDelivery | None = None  # set by the lifespan once the alert delivery runs

    def __post_init__(self) -> None:
        if self.settings.db_pgbouncer:
            # Through PgBouncer in transaction mode a statement's prepare and execute reach the same
            # server connection only inside a transaction.
            self.reads = self.sessionmaker
        else:
            self.reads = async_sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            )
        self.submissions = UnitBatcher(self.unit, name="submissions")
        self.results = UnitBatcher(self.unit, name="results", prepare=lock_batch)
        self.keys = KeyStore(self.settings, self.reads)
        self.audit = GroupInsert(self.engine, cast(Table, AuditEvent.__table__))

    async def close(self) -> None:
        await self.submissions.close()
        await self.results.close()
        await self.audit.close()

    def unit(self, trace_id: str | None = None) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker, self.bus, trace_id=trace_id, metrics=self.metrics)


STATE_KEY = "coo"  # the lifespan state's one entry


def state_of(connection: HTTPConnection) -> OrchestratorState:
    """The lifespan's state, for a request (or a websocket)."""
    state: OrchestratorState = getattr(connection.state, STATE_KEY)
    return state
