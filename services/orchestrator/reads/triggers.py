"""Reads of triggers: each with its latest deliveries and their outcome (never its secret)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Trigger, TriggerDelivery
from services.common.money import Money
from services.orchestrator.errors import NotFound
from services.orchestrator.state import OrchestratorState

DELIVERIES_SHOWN = 20  # latest deliveries shown with one trigger
DELIVERIES_LISTED = 3  # ... with each trigger of the list


class TriggerDeliveryOut(BaseModel):
    delivery_id: str
    source: str
    event: str
    outcome: str
    mission_id: uuid.UUID | None
    error: str | None
    received_at: datetime


class TriggerOut(BaseModel):
    name: str
    event: str
    workflow: str
    version: int | None
    input: dict[str, Any]
    filter: str | None
    has_secret: bool = Field(description="True: signed webhooks can reach it (the secret is never shown)")
    webhook_path: str
    priority: int
    budget_usd: Money | None
    budget_tokens: int | None
    caller: str
    created_at: datetime
    recent_deliveries: list[TriggerDeliveryOut]


def trigger_out(trigger: Trigger, deliveries: Sequence[TriggerDeliveryOut]) -> TriggerOut:
    return TriggerOut(
        name=trigger.name,
        event=trigger.event,
        workflow=trigger.workflow,
        version=trigger.workflow_version,
        input=trigger.input,
        filter=trigger.filter,
        has_secret=trigger.secret is not None,
        webhook_path=f"/webhooks/triggers/{trigger.name}",
        priority=trigger.priority,
        budget_usd=trigger.budget_usd,
        budget_tokens=trigger.budget_tokens,
        caller=trigger.caller,
        created_at=trigger.created_at,
        recent_deliveries=list(deliveries),
    )


async def recent_deliveries(
    session: AsyncSession, trigger_ids: Sequence[uuid.UUID], per_trigger: int
) -> dict[uuid.UUID, list[TriggerDeliveryOut]]:
    """The latest ``per_trigger`` deliveries of each trigger, newest first, in one statement."""
    if not trigger_ids:
        return {}
    rank = func.row_number().over(
        partition_by=TriggerDelivery.trigger_id,
        order_by=(TriggerDelivery.received_at.desc(), TriggerDelivery.id.desc()),
    )
    ranked = select(TriggerDelivery, rank.label("rank")).where(TriggerDelivery.trigger_id.in_(trigger_ids)).subquery()
    rows = await session.execute(
        select(ranked)
        .where(ranked.c.rank <= per_trigger)
        .order_by(ranked.c.trigger_id, ranked.c.received_at.desc(), ranked.c.id.desc())
    )
    found: dict[uuid.UUID, list[TriggerDeliveryOut]] = {}
    for row in rows:
        one = TriggerDeliveryOut(
            delivery_id=row.delivery_id,
            source=row.source,
            event=row.event,
            outcome=row.outcome,
            mission_id=row.mission_id,
            error=row.error,
            received_at=row.received_at,
        )
        found.setdefault(row.trigger_id, []).append(one)
    return found


async def list_triggers(state: OrchestratorState) -> list[TriggerOut]:
    """Every trigger by name, each with its latest few deliveries."""
    async with state.reads() as session:
        triggers = list((await session.execute(select(Trigger).order_by(Trigger.name))).scalars())
        deliveries = await recent_deliveries(session, [t.id for t in triggers], DELIVERIES_LISTED)
    return [trigger_out(t, deliveries.get(t.id, [])) for t in triggers]


async def read_trigger(state: OrchestratorState, name: str, deliveries: int = DELIVERIES_SHOWN) -> TriggerOut:
    """One trigger with its latest ``deliveries`` (404 when unknown)."""
    async with state.reads() as session:
        trigger = (await session.execute(select(Trigger).where(Trigger.name == name))).scalar_one_or_none()
        if trigger is None:
            raise NotFound(f"trigger '{name}' not found", field="name")
        recent = await recent_deliveries(session, [trigger.id], deliveries)
    return trigger_out(trigger, recent.get(trigger.id, []))
