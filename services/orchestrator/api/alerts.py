"""``POST /webhooks/alertmanager`` (Alertmanager's webhook, v4) and ``GET /v1/alerts``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from services.common.http import ApiError, error_responses
from services.orchestrator.api.deps import BODY_ERRORS, KEY_ERRORS, CallerDep, StateDep, operation_id, responses
from services.orchestrator.notify.alerts import AlertDelivery, AlertGroup, Receipt, ReceivedAlert
from services.orchestrator.notify.slack import SlackNotifier
from services.orchestrator.reads.alerts import AlertOut, find_alerts
from services.orchestrator.state import OrchestratorState, state_of

router = APIRouter(tags=["alerts"], generate_unique_id_function=operation_id)

_bearer = HTTPBearer(auto_error=False, description="COO_ALERTMANAGER_TOKEN")

# Alertmanager writes this for "no end time yet".
_ZERO_TIME_YEAR = 1


class AmAlert(BaseModel):
    """One alert of an Alertmanager webhook payload (unknown fields are ignored: Alertmanager adds some)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=64)


class AmPayload(BaseModel):
    """Alertmanager's webhook body, version 4."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[AmAlert] = Field(max_length=1000)

    def group(self) -> AlertGroup:
        return AlertGroup(
            status=self.status,
            group_labels=self.group_labels,
            external_url=self.external_url,
            alerts=[
                ReceivedAlert(
                    fingerprint=a.fingerprint,
                    status=a.status,
                    labels=a.labels,
                    annotations=a.annotations,
                    starts_at=a.starts_at,
                    ends_at=a.ends_at if a.ends_at is not None and a.ends_at.year > _ZERO_TIME_YEAR else None,
                    generator_url=a.generator_url,
                )
                for a in self.alerts
            ],
        )


class WebhookReceipt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stored: int = Field(description="alerts new to COO")
    duplicates: int = Field(description="alerts already stored with this status")
    notification: Literal["delivered", "failed", "disabled", "none"] = Field(
        description="what became of the Slack message (failed: retried later)"
    )


def get_delivery(request: Request) -> AlertDelivery:
    delivery = state_of(request).alerts
    assert delivery is not None  # the lifespan starts it before serving
    return delivery


DeliveryDep = Annotated[AlertDelivery, Depends(get_delivery)]


def check_alertmanager_token(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The webhook takes only ``Authorization: Bearer <COO_ALERTMANAGER_TOKEN>``; unset, it is off."""
    expected = state.settings.alertmanager_token
    if expected is None or not expected.get_secret_value():
        raise ApiError(
            503,
            "unavailable",
            "the Alertmanager webhook is disabled: set COO_ALERTMANAGER_TOKEN on the orchestrator "
            "and the same token in Alertmanager's credentials_file",
        )
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "unauthorized", "missing token: send 'Authorization: Bearer <token>'", headers=challenge)
    if not hmac.compare_digest(credentials.credentials.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "wrong Alertmanager token", headers=challenge)


@router.post(
    "/webhooks/alertmanager",
    summary="Receive an Alertmanager notification (webhook payload v4)",
    dependencies=[Depends(check_alertmanager_token)],
    responses=responses(
        BODY_ERRORS,
        error_responses(
            401,
            422,
            503,
            described={
                401: "Missing or wrong COO_ALERTMANAGER_TOKEN",
                503: "The webhook is off: COO_ALERTMANAGER_TOKEN is not set",
            },
        ),
    ),
)
async def alertmanager_webhook(payload: AmPayload, delivery: DeliveryDep) -> WebhookReceipt:
    receipt: Receipt = await delivery.receive(payload.group())
    return WebhookReceipt(stored=receipt.stored, duplicates=receipt.duplicates, notification=receipt.notification)


@router.get("/v1/alerts", summary="Alerts received from Alertmanager, newest first", responses=KEY_ERRORS)
async def list_alerts(
    state: StateDep,
    _: CallerDep,
    status: Annotated[Literal["firing", "resolved"] | None, Query(description="only this status")] = None,
    alertname: Annotated[str | None, Query(max_length=200, description="only this alert")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertOut]:
    return await find_alerts(state, status=status, alertname=alertname, limit=limit)


async def start_alert_delivery(state: OrchestratorState, stack: AsyncExitStack) -> AlertDelivery:
    """The Slack notifier and the alert delivery with its retry task; ``stack`` closes them."""
    settings = state.settings
    slack = await stack.enter_async_context(SlackNotifier(settings.slack_webhook_url))
    delivery = AlertDelivery(
        state.sessionmaker,
        slack,
        state.registry,
        grafana_url=settings.grafana_url,
        retry_s=settings.alert_retry_s,
    )
    task = asyncio.create_task(delivery.run(), name="alert-notification-retries")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
    return delivery
