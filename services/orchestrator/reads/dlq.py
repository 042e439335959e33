"""Reads of the dead-letter queue."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import select

from services.common.db.models import DeadLetter, Step
from services.orchestrator.reads.paging import newest_first, split_page
from services.orchestrator.state import OrchestratorState


class DeadLetterOut(BaseModel):
    id: uuid.UUID
    subject: str
    error: str
    error_type: str
    attempts: int
    mission_id: uuid.UUID | None
    step_id: uuid.UUID | None
    step_key: str | None
    payload: Any | None
    payload_base64: str | None
    headers: dict[str, Any]
    first_failed_at: datetime
    replayed_at: datetime | None
    replay_of: uuid.UUID | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


def _out(letter: DeadLetter, step_key: str | None) -> DeadLetterOut:
    try:
        payload, raw = orjson.loads(letter.payload), None
    except orjson.JSONDecodeError:
        payload, raw = None, base64.b64encode(letter.payload).decode()
    return DeadLetterOut(
        id=letter.id,
        subject=letter.subject,
        error=letter.error,
        error_type=letter.error_type,
        attempts=letter.attempts,
        mission_id=letter.mission_id,
        step_id=letter.step_id,
        step_key=step_key,
        payload=payload,
        payload_base64=raw,
        headers=letter.headers or {},
        first_failed_at=letter.first_failed_at,
        replayed_at=letter.replayed_at,
        replay_of=letter.replay_of,
    )


async def find_dead_letters(
    state: OrchestratorState, *, mission_id: uuid.UUID | None, replayed: bool | None, limit: int, cursor: str | None
) -> DeadLetterPage:
    """Dead letters newest first, filtered; the REST list and the console share it."""
    query = newest_first(
        select(DeadLetter, Step.key).outerjoin(Step, Step.id == DeadLetter.step_id),
        DeadLetter,
        limit=limit,
        cursor=cursor,
    )
    if mission_id is not None:
        query = query.where(DeadLetter.mission_id == mission_id)
    if replayed is not None:
        query = query.where(DeadLetter.replayed_at.is_not(None) if replayed else DeadLetter.replayed_at.is_(None))
    async with state.sessionmaker() as session:
        rows = (await session.execute(query)).all()
    page, next_cursor = split_page(rows, limit, last=lambda row: row[0])
    return DeadLetterPage(
        items=[_out(letter, key) for letter, key in page],
        next_cursor=next_cursor,
    )
