"""Alertmanager notifications: stored once per (fingerprint, status, starts_at), told to Slack.

``AlertDelivery.receive(group)`` stores the group's alerts (a repeat notification stores nothing
new) and posts one Slack message for the alerts that are new. An alert whose message did not get
through keeps ``notified_at`` NULL; ``run()`` retries those every ``COO_ALERT_RETRY_S`` until
Slack takes them, so a Slack outage loses nothing. Rows are locked (``FOR UPDATE SKIP LOCKED``)
while their message is posted, so replicas never post one alert twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import AlertRow
from services.common.logging import get_logger
from services.common.scrub import scrub
from services.orchestrator.notify.slack import MAX_SECTION_TEXT, SlackNotifier

log = get_logger(__name__)

# Alerts shown one by one in a message; the rest are counted in a closing line.
MAX_ALERTS_SHOWN = 10
# Pending notifications older than this are not retried any more (they would only confuse).
RETRY_HORIZON = timedelta(days=1)


@dataclass(frozen=True)
class ReceivedAlert:
    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str = ""


@dataclass(frozen=True)
class AlertGroup:
    status: str
    alerts: Sequence[ReceivedAlert]
    group_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""


@dataclass(frozen=True)
class Receipt:
    stored: int
    duplicates: int
    notification: str  # delivered | failed | disabled | none (nothing new to tell)


class AlertDelivery:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        slack: SlackNotifier,
        registry: CollectorRegistry,
        *,
        grafana_url: str,
        retry_s: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.slack = slack
        self.grafana_url = grafana_url.rstrip("/")
        self.retry_s = retry_s
        self.notifications = Counter(
            "coo_alert_notifications_total",
            "Alert notifications posted to Slack, per alert, by alert status and outcome (delivered, failed, disabled)",
            ["status", "outcome"],
            registry=registry,
        )
        for status in ("firing", "resolved"):  # at 0 from the start: the first failure is an increase
            for outcome in ("delivered", "failed", "disabled"):
                self.notifications.labels(status=status, outcome=outcome)

    async def receive(self, group: AlertGroup) -> Receipt:
        """Store the group's alerts (deduplicated) and post one message for the new ones."""
        new_ids: list[uuid.UUID] = []
        async with self.sessionmaker() as session, session.begin():
            for alert in group.alerts:
                statement = (
                    insert(AlertRow)
                    .values(
                        id=uuid.uuid4(),
                        fingerprint=alert.fingerprint,
                        status=alert.status,
                        labels=scrub(alert.labels),
                        annotations=scrub(alert.annotations),
                        starts_at=alert.starts_at,
                        ends_at=alert.ends_at,
                    )
                    .on_conflict_do_nothing(index_elements=["fingerprint", "status", "starts_at"])
                    .returning(AlertRow.id)
                )
                inserted = (await session.execute(statement)).scalar_one_or_none()
                if inserted is not None:
                    new_ids.append(inserted)
        duplicates = len(group.alerts) - len(new_ids)
        if not new_ids:
            return Receipt(stored=0, duplicates=duplicates, notification="none")
        links = {a.fingerprint: a.generator_url for a in group.alerts if a.generator_url}
        outcome = await self._notify(AlertRow.id.in_(new_ids), links=links, external_url=group.external_url)
        return Receipt(stored=len(new_ids), duplicates=duplicates, notification=outcome or "none")

    async def retry_pending(self) -> str | None:
        """Post the alerts whose message has not gone through yet (older than one retry period)."""
        now = datetime.now(UTC)
        return await self._notify(
            AlertRow.notified_at.is_(None),
            AlertRow.received_at < now - timedelta(seconds=self.retry_s),
            AlertRow.received_at > now - RETRY_HORIZON,
        )

    async def run(self) -> None:
        """Retry pending notifications forever (a lifespan task)."""
        if not self.slack.enabled:
            return
        while True:
            try:
                await self.retry_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert_retry_failed")
            await asyncio.sleep(self.retry_s)

    async def _notify(
        self, *conditions: ColumnElement[bool], links: dict[str, str] | None = None, external_url: str = ""
    ) -> str | None:
        """Lock the matching unnotified rows, post one message per status, mark what got through."""
        async with self.sessionmaker() as session, session.begin():
            rows = list(
                (
                    await session.execute(
                        select(AlertRow)
                        .where(AlertRow.notified_at.is_(None), *conditions)
                        .order_by(AlertRow.starts_at)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not rows:
                return None
            outcome = "delivered"
            for status in ("firing", "resolved"):
                batch = [row for row in rows if row.status == status]
                if not batch:
                    continue
                text, blocks, colour = alert_message(
                    status, batch, grafana_url=self.grafana_url, links=links or {}, external_url=external_url
                )
                delivery = await self.slack.post(text, blocks, colour=colour)
                self.notifications.labels(status, delivery.outcome).inc(len(batch))
                if delivery.ok:
                    sent_at = datetime.now(UTC)
                    for row in batch:
                        row.notified_at = sent_at
                else:
                    outcome = delivery.outcome
                    log.warning("alert_notification_pending", status=status, alerts=len(batch), error=delivery.error)
            return outcome


def _label(row: AlertRow, name: str, default: str = "") -> str:
    value = (row.labels or {}).get(name, default)
    return str(value)


def _annotation(row: AlertRow, name: str) -> str:
    return str((row.annotations or {}).get(name, "") or "")


def alert_message(
    status: str,
    rows: Sequence[AlertRow],
    *,
    grafana_url: str,
    links: dict[str, str] | None = None,
    external_url: str = "",
) -> tuple[str, list[dict[str, Any]], str]:
    """Fallback text, Block Kit blocks and colour for alerts of one status."""
    names = sorted({_label(row, "alertname", "alert") for row in rows})
    severities = {_label(row, "severity", "warning") for row in rows}
    severity = next((s for s in ("critical", "warning", "info") if s in severities), "warning")
    colour = "resolved" if status == "resolved" else severity
    title = f"[{status.upper()}:{len(rows)}] {', '.join(names)}"
    if status == "firing":
        title += f" ({severity})"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for row in rows[:MAX_ALERTS_SHOWN]:
        blocks.append(_alert_section(row, grafana_url=grafana_url, source=(links or {}).get(row.fingerprint, "")))
    if len(rows) > MAX_ALERTS_SHOWN:
        more = f"… and {len(rows) - MAX_ALERTS_SHOWN} more"
        if external_url:
            more += f" — <{external_url}|Alertmanager>"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    summaries = "; ".join(_annotation(row, "summary") or _label(row, "alertname") for row in rows[:3])
    return f"{title}: {summaries}"[:MAX_SECTION_TEXT], blocks, colour


def _absolute(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _alert_section(row: AlertRow, *, grafana_url: str, source: str) -> dict[str, Any]:
    name = _label(row, "alertname", "alert")
    severity = _label(row, "severity", "warning")
    summary = _annotation(row, "summary") or name
    description = _annotation(row, "description")
    when = f"since {row.starts_at:%Y-%m-%d %H:%M:%S} UTC"
    if row.status == "resolved" and row.ends_at is not None:
        when = f"resolved {row.ends_at:%Y-%m-%d %H:%M:%S} UTC"
    keys = ("workflow", "agent", "service", "job", "error_type", "slo")
    scope = ", ".join(f"{k}={row.labels[k]}" for k in keys if (row.labels or {}).get(k))
    links = []
    if runbook := _annotation(row, "runbook_url"):
        # Slack links only absolute URLs; a repository path (docs/runbooks.md#…) is shown as text.
        links.append(f"<{runbook}|Runbook>" if _absolute(runbook) else f"Runbook: `{runbook}`")
    if dashboard := _annotation(row, "dashboard"):
        url = dashboard if _absolute(dashboard) else f"{grafana_url}/d/{dashboard}"
        links.append(f"<{url}|Dashboard>")
    if source:
        links.append(f"<{source}|Source>")
    lines = [f"*{name}* · `{severity}` · {when}", f"*{summary}*"]
    if description:
        lines.append(description)
    if scope:
        lines.append(scope)
    if links:
        lines.append(" · ".join(links))
    text = "\n".join(lines)
    if len(text) > MAX_SECTION_TEXT:
        text = text[: MAX_SECTION_TEXT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
