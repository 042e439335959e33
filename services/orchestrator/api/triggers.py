"""``/v1/triggers``, ``POST /v1/events`` and ``POST /webhooks/triggers/{name}``: missions started by
events, once per delivery; webhooks are authenticated by an HMAC-SHA256 signature, not a key."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.http import ApiError, error_body, error_responses
from services.common.status import DeliveryOutcome
from services.orchestrator.api.deps import (
    BODY_ERRORS,
    KEY_ERRORS,
    SCOPE_ERRORS,
    CallerDep,
    OperatorDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.commands import triggers
from services.orchestrator.commands.triggers import (
    DeliveryOut,
    EventAccepted,
    EventIn,
    TriggerCreate,
    WebhookDelivery,
    count_bad_signature,
    deliver_webhook,
    signature_matches,
    webhook_secret,
)
from services.orchestrator.reads.triggers import TriggerOut, read_trigger
from services.orchestrator.reads.triggers import list_triggers as read_triggers

# Its /v1 routes take an API key; the webhook takes a signature instead (its answers are its own).
router = APIRouter(tags=["triggers"], dependencies=[Depends(storable_params)], generate_unique_id_function=operation_id)

MAX_WEBHOOK_BYTES = 1024 * 1024  # GitHub caps its payloads at 25 MB; COO keeps what a mission input can hold
_NOT_FOUND = error_responses(404, described={404: "No trigger of that name"})


class WebhookAnswer(BaseModel):
    missions: list[uuid.UUID] = Field(description="The mission this delivery started (none for a duplicate)")
    delivery: DeliveryOut


# The webhook reads its body itself (the signature covers the bytes as sent): described here.
WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "The event's payload"}},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"payload": {"type": "string", "description": "The payload as JSON text"}},
                }
            },
        },
    }
}


@router.post(
    "/v1/triggers",
    status_code=201,
    summary="Create an event trigger",
    responses=responses(
        KEY_ERRORS, SCOPE_ERRORS, BODY_ERRORS, error_responses(409, described={409: "A trigger of that name exists"})
    ),
)
async def create_trigger(body: TriggerCreate, state: StateDep, caller: OperatorDep) -> TriggerOut:
    note_target("trigger", body.name)
    return await triggers.create_trigger(state, body, caller)


@router.get("/v1/triggers", summary="Every trigger, with its latest deliveries", responses=KEY_ERRORS)
async def list_triggers(state: StateDep, _: CallerDep) -> list[TriggerOut]:
    return await read_triggers(state)


@router.get(
    "/v1/triggers/{name}",
    summary="A trigger with its latest deliveries and their outcome",
    responses=responses(KEY_ERRORS, _NOT_FOUND),
)
async def get_trigger(name: str, state: StateDep, _: CallerDep) -> TriggerOut:
    return await read_trigger(state, name)


@router.delete(
    "/v1/triggers/{name}",
    status_code=204,
    summary="Delete a trigger (its missions stay)",
    responses=responses(KEY_ERRORS, SCOPE_ERRORS, _NOT_FOUND),
)
async def delete_trigger(name: str, state: StateDep, _: OperatorDep) -> Response:
    note_target("trigger", name)
    await triggers.delete_trigger(state, name)
    return Response(status_code=204)


@router.post(
    "/v1/events",
    status_code=202,
    summary="Deliver an event: one mission per matching trigger; the same id again starts nothing",
    responses=responses(
        KEY_ERRORS,
        SCOPE_ERRORS,
        BODY_ERRORS,
        error_responses(409, described={409: "The id was delivered before with another event or payload"}),
    ),
)
async def publish_event(body: EventIn, state: StateDep, caller: OperatorDep) -> EventAccepted:
    note_target("event", body.id)
    return await triggers.deliver_event(state, body, caller)


@router.post(
    "/webhooks/triggers/{name}",
    status_code=202,
    summary="A signed webhook (GitHub's format, or COO's) for one trigger",
    description="The body is signed with the trigger's secret: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>` with "
    "the delivery id in `X-GitHub-Delivery` and the event in `X-GitHub-Event` (GitHub), or the same in "
    "`X-COO-Signature-256`, `X-COO-Delivery` and `X-COO-Event`. A JSON body, or GitHub's form-encoded `payload`.",
    openapi_extra=WEBHOOK_BODY,
    response_model=WebhookAnswer,
    responses=error_responses(
        401,
        404,
        413,
        422,
        described={
            401: "Missing or bad signature (nothing is written)",
            404: "No trigger of that name",
            413: "Body over 1 MiB",
            422: "No delivery id, a body that is not a JSON object, or the mission was refused "
            "(the answer then also carries `missions` and `delivery`)",
        },
    ),
)
async def receive_trigger_webhook(
    name: str,
    request: Request,
    state: StateDep,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
    x_coo_signature_256: Annotated[str | None, Header()] = None,
    x_github_delivery: Annotated[str | None, Header(max_length=200)] = None,
    x_coo_delivery: Annotated[str | None, Header(max_length=200)] = None,
    x_github_event: Annotated[str | None, Header(max_length=200)] = None,
    x_coo_event: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    body = await _capped_body(request)
    secret = await webhook_secret(state, name)
    if secret is None:
        raise ApiError(401, "unauthorized", f"trigger '{name}' has no secret: it takes no webhooks")
    if not signature_matches(secret, body, x_hub_signature_256 or x_coo_signature_256):
        count_bad_signature(state, name)
        raise ApiError(
            401,
            "unauthorized",
            "bad or missing signature: send X-Hub-Signature-256 or X-COO-Signature-256 sha256=<hex>",
        )
    delivery_id = x_github_delivery or x_coo_delivery
    if not delivery_id:
        raise ApiError(
            422, "validation", "missing delivery id: send X-GitHub-Delivery or X-COO-Delivery", field="X-COO-Delivery"
        )
    payload = _payload(body, request.headers.get("content-type", ""))
    delivered = await deliver_webhook(
        state, name, WebhookDelivery(delivery_id=delivery_id, event=x_github_event or x_coo_event, payload=payload)
    )
    if delivered.outcome is DeliveryOutcome.FAILED:  # the sender sees it, and may deliver it again
        return JSONResponse(
            error_body("validation", f"trigger '{name}': {delivered.error}", "body") | _answer(delivered),
            status_code=422,
        )
    return JSONResponse(_answer(delivered), status_code=202)


def _answer(delivered: DeliveryOut) -> dict[str, Any]:
    return {
        "missions": [str(delivered.mission_id)] if delivered.mission_id else [],
        "delivery": orjson.loads(delivered.model_dump_json()),
    }


async def _capped_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise ApiError(413, "payload_too_large", f"webhook body over {MAX_WEBHOOK_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object, or GitHub's ``application/x-www-form-urlencoded`` body with its ``payload`` field."""
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(), strict_parsing=False)
            body = fields.get("payload", [""])[0].encode()
        value = orjson.loads(body) if body.strip() else {}
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "validation", f"body: not JSON: {exc}", field="body") from exc
    if not isinstance(value, dict):
        raise ApiError(422, "validation", "body: a webhook payload must be a JSON object", field="body")
    return value
