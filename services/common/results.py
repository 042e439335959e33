"""A stored attempt result as the WorkResult message that reports it."""

from __future__ import annotations

import uuid

from services.common.contracts import AttemptEvent, StepError, WorkResult
from services.common.db.models import AgentResult


def result_from_row(mission_id: uuid.UUID, row: AgentResult) -> WorkResult:
    return WorkResult(
        mission_id=mission_id,
        step_id=row.step_id,
        attempt=row.attempt,
        result_id=row.id,
        success=row.success,
        output=row.output,
        error=StepError.model_validate(row.error) if row.error else None,
        model=row.model,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens,
        cost_usd=row.cost_usd,
        duration_ms=row.duration_ms,
        worker=row.worker,
        started_at=row.started_at,
        events=[AttemptEvent.model_validate(event) for event in row.events or ()],
    )
