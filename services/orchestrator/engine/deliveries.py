"""Deliveries to event triggers: each (trigger, delivery id) once, by its ``trigger_deliveries`` row
in the transaction that starts its mission; the REST API's events and webhooks go through here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from services.common.db.models import Trigger, TriggerDelivery
from services.common.errors import CooError
from services.common.settings import Settings
from services.common.status import DeliveryOutcome, TriggerType
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.missions import MissionSpec, start_mission
from services.orchestrator.engine.templates import evaluate_condition, event_context, render_value
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import OrchestratorError


@dataclass(frozen=True)
class Delivery:
    """What became of one delivery to one trigger."""

    trigger: str
    outcome: DeliveryOutcome
    mission_id: uuid.UUID | None = None
    error: str | None = None


async def deliver(
    uow: UnitOfWork,
    settings: Settings,
    metrics: EngineMetrics | None,
    trigger: Trigger,
    source: TriggerType,
    delivery_id: str,
    event: str,
    payload: Mapping[str, Any],
) -> Delivery:
    """One delivery to one trigger, once: claimed by its row (a concurrent one waits for it); a
    delivery that failed before is tried again, any other is answered as it was (``duplicate``)."""
    if metrics is not None:
        metrics.prepare_trigger(trigger.name, source.value)
    session = uow.session
    claimed = await session.execute(
        insert(TriggerDelivery)
        .values(
            trigger_id=trigger.id,
            delivery_id=delivery_id,
            source=source.value,
            event=event,
            outcome=DeliveryOutcome.FAILED,  # settled below, in this transaction
        )
        .on_conflict_do_nothing(index_elements=["trigger_id", "delivery_id"])
        .returning(TriggerDelivery.id)
    )
    row_id = claimed.scalar_one_or_none()
    if row_id is None:  # delivered before (a concurrent delivery is waited for by the INSERT)
        earlier = (
            await session.execute(
                select(TriggerDelivery)
                .where(TriggerDelivery.trigger_id == trigger.id, TriggerDelivery.delivery_id == delivery_id)
                .with_for_update()
            )
        ).scalar_one()
        if earlier.outcome != DeliveryOutcome.FAILED:
            _count(uow, trigger.name, source, DeliveryOutcome.DUPLICATE)
            return Delivery(trigger.name, DeliveryOutcome.DUPLICATE, earlier.mission_id)
        row_id = earlier.id  # it failed: this delivery tries again
    outcome, mission_id, error = await _start(uow, settings, trigger, source, delivery_id, event, payload)
    await session.execute(
        TriggerDelivery.__table__.update()  # type: ignore[attr-defined]
        .where(TriggerDelivery.id == row_id)
        .values(outcome=outcome, mission_id=mission_id, error=error, event=event, received_at=func.now())
    )
    _count(uow, trigger.name, source, outcome)
    return Delivery(trigger.name, outcome, mission_id, error)


async def _start(
    uow: UnitOfWork,
    settings: Settings,
    trigger: Trigger,
    source: TriggerType,
    delivery_id: str,
    event: str,
    payload: Mapping[str, Any],
) -> tuple[DeliveryOutcome, uuid.UUID | None, str | None]:
    if event != trigger.event:
        return DeliveryOutcome.IGNORED, None, f"event '{event}' is not the trigger's '{trigger.event}'"
    context = event_context({"name": event, "id": delivery_id, "source": source.value, "payload": dict(payload)})
    try:
        if trigger.filter is not None and not evaluate_condition(trigger.filter, context, field="filter"):
            return DeliveryOutcome.IGNORED, None, "the trigger's filter is false for this event"
        mission_input = render_value(trigger.input, context, field="input")
        spec = MissionSpec(
            workflow=trigger.workflow,
            version=trigger.workflow_version,
            input=mission_input,
            caller=f"trigger:{trigger.name}",
            priority=trigger.priority,
            budget_usd=trigger.budget_usd,
            budget_tokens=trigger.budget_tokens,
            trigger={"type": source.value, "name": trigger.name, "event": event, "event_id": delivery_id},
        )
        mission = await start_mission(uow, settings, spec)
    except (CooError, OrchestratorError) as exc:  # a template or the workflow refused it
        return DeliveryOutcome.FAILED, None, exc.message
    return DeliveryOutcome.STARTED, mission.id, None


def _count(uow: UnitOfWork, trigger: str, source: TriggerType, outcome: DeliveryOutcome) -> None:
    uow.after_commit(
        lambda metrics: metrics.trigger_deliveries.labels(trigger=trigger, source=source.value, outcome=outcome).inc()
    )
