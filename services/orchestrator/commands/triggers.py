"""Event triggers: register them, deliver events and signed webhooks to them, once per delivery.

An event (``POST /v1/events``) starts one mission per trigger listening for its name whose filter
holds; the event's id is kept (table ``events``), so the same id again is answered with the same
missions and starts nothing. A webhook (``POST /webhooks/triggers/{name}``) is for one trigger,
authenticated by an HMAC-SHA256 of its raw body with the trigger's secret, and deduplicated by its
delivery id. Every delivery to a trigger is a ``trigger_deliveries`` row with its outcome; one that
failed (its input could not be rendered, the workflow refused it) can be delivered again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import EventRecord, Trigger, TriggerDelivery
from services.common.money import amount_schema
from services.common.scrub import scrub
from services.common.status import DeliveryOutcome, TriggerType
from services.orchestrator.auth import Caller
from services.orchestrator.engine.deliveries import Delivery, deliver
from services.orchestrator.engine.missions import find_workflow_ref
from services.orchestrator.engine.templates import (
    check_syntax,
    is_template,
    referenced_roots,
)
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import Conflict, InvalidInput, NotFound
from services.orchestrator.reads.triggers import TriggerOut, trigger_out
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
EVENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"


class TriggerCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, examples=["repo-health-on-push"])
    event: str = Field(pattern=EVENT_PATTERN, description="The event name it listens for", examples=["push"])
    workflow: str = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1, le=2_147_483_647, description="None: the latest at each event")
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The mission's input; strings may be templates over {{ event.payload… }}, {{ event.id }}, "
        "{{ event.name }}, {{ event.source }}",
        examples=[{"repo": "{{ event.payload.repository.clone_url }}"}],
    )
    filter: str | None = Field(
        default=None,
        max_length=2000,
        description="A condition over event; the trigger ignores events for which it is false",
        examples=["event.payload.ref == 'refs/heads/main'"],
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=500, description="HMAC key of signed webhooks (never shown again)"
    )
    priority: int = Field(default=0, ge=-1000, le=1000)
    budget_usd: Decimal | None = Field(
        default=None, ge=0, max_digits=18, decimal_places=8, json_schema_extra=amount_schema
    )
    budget_tokens: int | None = Field(default=None, ge=0, le=2**62)


class EventIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field(pattern=EVENT_PATTERN, examples=["push"])
    id: str = Field(min_length=1, max_length=200, description="The delivery's id: the same id again starts nothing")
    payload: dict[str, Any] = Field(default_factory=dict)


class DeliveryOut(BaseModel):
    trigger: str
    outcome: DeliveryOutcome
    mission_id: uuid.UUID | None
    error: str | None


class EventAccepted(BaseModel):
    id: str
    event: str
    missions: list[uuid.UUID]
    deliveries: list[DeliveryOut]
    duplicate: bool = Field(description="True: this id was delivered before; nothing new started")


async def create_trigger(state: OrchestratorState, body: TriggerCreate, caller: Caller) -> TriggerOut:
    """A new trigger (409 when the name is taken; 422 for a bad template, filter or workflow)."""
    require_storable(body.model_dump(mode="json"), "body")
    _check_templates(body.input, "input")
    if body.filter is not None:
        _check_template_text(body.filter if is_template(body.filter) else "{{ (" + body.filter + ") }}", "filter")
    async with state.unit() as uow:
        try:
            await find_workflow_ref(uow.session, body.workflow, body.version)
        except NotFound as exc:
            raise InvalidInput(f"workflow: {exc.message}", field="workflow") from exc
        trigger = Trigger(
            id=uuid.uuid4(),
            name=body.name,
            event=body.event,
            workflow=body.workflow,
            workflow_version=body.version,
            input=scrub(body.input),
            filter=body.filter,
            secret=body.secret,
            priority=body.priority,
            budget_usd=body.budget_usd,
            budget_tokens=body.budget_tokens,
            caller=caller.name,
        )
        uow.session.add(trigger)
        try:
            await uow.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"trigger '{body.name}' exists already", field="name") from exc
        await uow.session.refresh(trigger, ["created_at"])
        return trigger_out(trigger, [])


async def delete_trigger(state: OrchestratorState, name: str) -> None:
    """Delete a trigger and its record of deliveries; the missions it started stay."""
    async with state.unit() as uow:
        trigger = await _find(uow.session, name, lock=True)
        await uow.session.delete(trigger)


def _digest(event: str, payload: dict[str, Any]) -> str:
    """What an event id stands for. orjson refuses integers beyond 64 bits, which JSON allows and
    Postgres stores: those payloads are written by the standard library, the same way."""
    try:
        text = orjson.dumps([event, payload], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps([event, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(text).hexdigest()


async def deliver_event(state: OrchestratorState, body: EventIn, caller: Caller) -> EventAccepted:
    """One mission per trigger listening for ``body.event`` whose filter holds; the same id again is
    answered with the missions it started then (409 when it comes with another event or payload)."""
    require_storable(body.model_dump(mode="json"), "body")
    digest = _digest(body.event, body.payload)
    async with state.unit() as uow:
        # Waits for a concurrent delivery of the same id to commit, then finds it.
        claimed = await uow.session.execute(
            insert(EventRecord)
            .values(id=body.id, event=body.event, digest=digest, missions=[], caller=caller.name)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(EventRecord.id)
        )
        if claimed.scalar_one_or_none() is None:
            return await _replayed_event(uow, body, digest)
        triggers = (
            (await uow.session.execute(select(Trigger).where(Trigger.event == body.event).order_by(Trigger.name)))
            .scalars()
            .all()
        )
        deliveries = [
            _delivery_out(
                await deliver(
                    uow, state.settings, state.metrics, trigger, TriggerType.EVENT, body.id, body.event, body.payload
                )
            )
            for trigger in triggers
        ]
        missions = [d.mission_id for d in deliveries if d.mission_id is not None]
        await uow.session.execute(
            EventRecord.__table__.update()  # type: ignore[attr-defined]
            .where(EventRecord.id == body.id)
            .values(missions=[str(m) for m in missions])
        )
    return EventAccepted(id=body.id, event=body.event, missions=missions, deliveries=deliveries, duplicate=False)


async def _replayed_event(uow: UnitOfWork, body: EventIn, digest: str) -> EventAccepted:
    record = await uow.session.get(EventRecord, body.id)
    assert record is not None
    if record.digest != digest:
        raise Conflict(f"event id '{body.id}' was delivered with another event or payload", field="id")
    rows = (
        await uow.session.execute(
            select(Trigger.name, TriggerDelivery)
            .join(Trigger, Trigger.id == TriggerDelivery.trigger_id)
            .where(TriggerDelivery.delivery_id == body.id, TriggerDelivery.source == TriggerType.EVENT)
            .order_by(Trigger.name)
        )
    ).all()
    deliveries = [
        DeliveryOut(trigger=name, outcome=DeliveryOutcome.DUPLICATE, mission_id=row.mission_id, error=row.error)
        for name, row in rows
    ]
    missions = [uuid.UUID(m) for m in record.missions]
    return EventAccepted(id=body.id, event=record.event, missions=missions, deliveries=deliveries, duplicate=True)


class WebhookDelivery(BaseModel):
    """What a signed webhook carried: its delivery id, event name and JSON payload."""

    delivery_id: str
    event: str | None
    payload: dict[str, Any]


async def webhook_secret(state: OrchestratorState, name: str) -> str | None:
    """The trigger's webhook secret (``NotFound`` for an unknown trigger; None when it has none)."""
    async with state.reads() as session:
        trigger = await _find(session, name)
        return trigger.secret


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """``header`` is ``sha256=<hex>`` of the HMAC-SHA256 of ``body`` with ``secret`` (constant time)."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


async def deliver_webhook(state: OrchestratorState, name: str, delivery: WebhookDelivery) -> DeliveryOut:
    """Deliver an authenticated webhook to trigger ``name``: its mission, or why none started; a
    redelivery of the same id is answered with the first one's mission."""
    require_storable(delivery.model_dump(mode="json"), "body")
    async with state.unit() as uow:
        trigger = await _find(uow.session, name)
        event = delivery.event or trigger.event
        delivered = await deliver(
            uow,
            state.settings,
            state.metrics,
            trigger,
            TriggerType.WEBHOOK,
            delivery.delivery_id,
            event,
            delivery.payload,
        )
    return _delivery_out(delivered)


def _delivery_out(delivered: Delivery) -> DeliveryOut:
    return DeliveryOut(
        trigger=delivered.trigger, outcome=delivered.outcome, mission_id=delivered.mission_id, error=delivered.error
    )


def count_bad_signature(state: OrchestratorState, trigger: str) -> None:
    """A webhook refused for its signature: counted, nothing written."""
    state.metrics.prepare_trigger(trigger, TriggerType.WEBHOOK.value)
    state.metrics.trigger_deliveries.labels(
        trigger=trigger, source=TriggerType.WEBHOOK.value, outcome=DeliveryOutcome.BAD_SIGNATURE
    ).inc()


async def _find(session: AsyncSession, name: str, *, lock: bool = False) -> Trigger:
    query = select(Trigger).where(Trigger.name == name)
    trigger = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if trigger is None:
        raise NotFound(f"trigger '{name}' not found", field="name")
    return trigger


def _check_templates(value: Any, field: str) -> None:
    if isinstance(value, str):
        if is_template(value):
            _check_template_text(value, field)
    elif isinstance(value, dict):
        for key, child in value.items():
            _check_templates(child, f"{field}.{key}")
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _check_templates(child, f"{field}[{i}]")


def _check_template_text(text: str, field: str) -> None:
    try:
        check_syntax(text)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from exc
    unknown = referenced_roots(text) - {"event"}
    if unknown:
        raise InvalidInput(
            f"{field}: a trigger's templates see only 'event' (event.payload, event.id, event.name, event.source); "
            f"not {', '.join(sorted(unknown))}",
            field=field,
        )
