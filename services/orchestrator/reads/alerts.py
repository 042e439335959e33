"""Reads of the alerts received from Alertmanager."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from services.common.db.models import AlertRow
from services.orchestrator.state import OrchestratorState


class AlertOut(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    fingerprint: str
    status: str
    labels: dict[str, Any]
    annotations: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None
    received_at: datetime
    notified_at: datetime | None

    @classmethod
    def of(cls, row: AlertRow) -> AlertOut:
        return cls(
            id=str(row.id),
            fingerprint=row.fingerprint,
            status=row.status,
            labels=dict(row.labels or {}),
            annotations=dict(row.annotations or {}),
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            received_at=row.received_at,
            notified_at=row.notified_at,
        )


async def find_alerts(
    state: OrchestratorState, *, status: str | None, alertname: str | None, limit: int
) -> list[AlertOut]:
    """Alerts received, newest first, filtered; the REST list and the console share it."""
    query = select(AlertRow).order_by(AlertRow.received_at.desc(), AlertRow.id).limit(limit)
    if status is not None:
        query = query.where(AlertRow.status == status)
    if alertname is not None:
        query = query.where(AlertRow.labels["alertname"].astext == alertname)
    async with state.sessionmaker() as session:
        return [AlertOut.of(row) for row in (await session.execute(query)).scalars()]
