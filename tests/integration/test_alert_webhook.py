"""Alertmanager's webhook on a real orchestrator (Postgres, NATS), and the Slack notifier against
a local server that answers like Slack."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.common.settings import Settings
from services.orchestrator.app import create_app
from services.orchestrator.notify.slack import SlackNotifier
from tests.conftest import API_KEY, RunningApp, db_fetch, wait_for
from tests.fakes.slack import FakeSlack

TOKEN = "am-token-0123456789abcdef"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


def with_alerting(settings: Settings, slack: FakeSlack | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {"alertmanager_token": SecretStr(TOKEN), "alert_retry_s": 0.3, **extra}
    if slack is not None:
        values["slack_webhook_url"] = SecretStr(slack.url)
    return settings.model_copy(update=values)


@pytest.fixture
async def orchestrator(settings: Settings, slack: FakeSlack) -> AsyncIterator[RunningApp]:
    app = RunningApp(create_app(with_alerting(settings, slack)), settings.orchestrator_port)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def payload(status: str, *, fingerprint: str = "3f1c2a9b7d6e5f40", **labels: str) -> dict[str, Any]:
    starts = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    alert_labels = {"alertname": "MissionFailureRatioHigh", "severity": "critical", "workflow": "hello", **labels}
    alert = {
        "status": status,
        "labels": alert_labels,
        "annotations": {
            "summary": "Missions of hello fail",
            "description": "42% of hello missions failed over 10m (password=hunter2hunter2).",
            "runbook_url": "https://example.test/docs/runbooks.md#missionfailureratiohigh",
            "dashboard": "coo-workflows",
        },
        "startsAt": starts.isoformat(),
        "endsAt": (starts + timedelta(minutes=7)).isoformat() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MissionFailureRatioHigh"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "coo-critical",
        "groupLabels": {"alertname": "MissionFailureRatioHigh"},
        "commonLabels": alert_labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


async def post(app: RunningApp, body: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.post(f"{app.url}/webhooks/alertmanager", json=body, headers=headers)


async def get(app: RunningApp, path: str, key: str | None = API_KEY, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.get(f"{app.url}{path}", params=params, headers=headers)


async def metric(app: RunningApp, status: str, outcome: str) -> float:
    text = (await get(app, "/metrics")).text
    pattern = rf'^coo_alert_notifications_total\{{outcome="{outcome}",status="{status}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_firing_then_resolved_reaches_slack_once_each(orchestrator: RunningApp, slack: FakeSlack) -> None:
    first = await post(orchestrator, payload("firing"))
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": 1, "duplicates": 0, "notification": "delivered"}
    assert len(slack.messages) == 1
    message = slack.messages[0]
    assert message["text"].startswith("[FIRING:1] MissionFailureRatioHigh (critical)")
    attachment = message["attachments"][0]
    assert attachment["color"] == "#E01E5A"
    section = attachment["blocks"][1]["text"]["text"]
    assert "Missions of hello fail" in section
    assert "<https://example.test/docs/runbooks.md#missionfailureratiohigh|Runbook>" in section
    assert "<http://127.0.0.1:3000/d/coo-workflows|Dashboard>" in section
    assert "<http://prometheus:9090/graph?g0.expr=x|Source>" in section
    assert "workflow=hello" in section
    assert "hunter2hunter2" not in str(message)

    # Alertmanager repeats a firing group every repeat_interval: stored once, told once.
    again = await post(orchestrator, payload("firing"))
    assert again.json() == {"stored": 0, "duplicates": 1, "notification": "none"}
    assert len(slack.messages) == 1

    resolved = await post(orchestrator, payload("resolved"))
    assert resolved.json()["notification"] == "delivered"
    assert len(slack.messages) == 2
    assert slack.messages[1]["text"].startswith("[RESOLVED:1] MissionFailureRatioHigh")
    assert slack.messages[1]["attachments"][0]["color"] == "#2EB67D"

    rows = await db_fetch(
        orchestrator_settings(orchestrator), "SELECT status, notified_at, ends_at FROM alerts ORDER BY status"
    )
    assert [r["status"] for r in rows] == ["firing", "resolved"]
    assert all(r["notified_at"] is not None for r in rows)
    assert rows[0]["ends_at"] is None and rows[1]["ends_at"] is not None
    assert await metric(orchestrator, "firing", "delivered") == 1
    assert await metric(orchestrator, "resolved", "delivered") == 1

    listed = await get(orchestrator, "/v1/alerts")
    assert listed.status_code == 200
    assert [a["status"] for a in listed.json()] == ["resolved", "firing"]
    assert listed.json()[0]["labels"]["alertname"] == "MissionFailureRatioHigh"
    only = await get(orchestrator, "/v1/alerts", status="firing")
    assert [a["status"] for a in only.json()] == ["firing"]
    assert (await get(orchestrator, "/v1/alerts", key=None)).status_code == 401
    bad = await get(orchestrator, "/v1/alerts", status="open")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.status"


_SETTINGS: dict[int, Settings] = {}


def orchestrator_settings(app: RunningApp) -> Settings:
    return _SETTINGS[app.port]


@pytest.fixture(autouse=True)
def _remember_settings(settings: Settings) -> None:
    _SETTINGS[settings.orchestrator_port] = settings


async def test_webhook_refuses_bad_tokens_and_bad_payloads(orchestrator: RunningApp, slack: FakeSlack) -> None:
    missing = await post(orchestrator, payload("firing"), token=None)
    assert missing.status_code == 401 and "missing token" in missing.json()["error"]["message"]
    wrong = await post(orchestrator, payload("firing"), token="not-the-token")
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong Alertmanager token"

    old = payload("firing") | {"version": "3"}
    refused = await post(orchestrator, old)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "version"
    broken = payload("firing")
    del broken["alerts"][0]["fingerprint"]
    refused = await post(orchestrator, broken)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "alerts.0.fingerprint"
    assert slack.messages == []
    assert await db_fetch(orchestrator_settings(orchestrator), "SELECT id FROM alerts") == []


async def test_webhook_is_off_without_a_token(settings: Settings) -> None:
    app = RunningApp(create_app(settings), settings.orchestrator_port)
    await app.start()
    try:
        answer = await post(app, payload("firing"))
        assert answer.status_code == 503
        assert "COO_ALERTMANAGER_TOKEN" in answer.json()["error"]["message"]
    finally:
        await app.stop()


async def test_slack_down_loses_nothing(orchestrator: RunningApp, slack: FakeSlack) -> None:
    slack.fail_next(503, times=3)  # the notifier's three attempts
    answer = await post(orchestrator, payload("firing", fingerprint="aaaabbbbccccdddd"))
    assert answer.status_code == 200
    assert answer.json()["notification"] == "failed"
    assert slack.messages == []
    assert await metric(orchestrator, "firing", "failed") == 1

    # The retry loop posts it once Slack answers again.
    await wait_for(lambda: slack.messages, timeout_s=20, what="the retried Slack message")
    assert slack.messages[0]["text"].startswith("[FIRING:1] MissionFailureRatioHigh")
    rows = await wait_for(
        lambda: db_fetch(orchestrator_settings(orchestrator), "SELECT id FROM alerts WHERE notified_at IS NOT NULL"),
        what="notified_at set",
    )
    assert len(rows) == 1
    assert await metric(orchestrator, "firing", "delivered") == 1
    assert len(slack.messages) == 1


async def test_notifier_honours_retry_after_and_never_raises(slack: FakeSlack) -> None:
    async with SlackNotifier(slack.url, backoff_s=0.01) as notifier:
        slack.fail_next(429, times=1, retry_after=1)
        loop_started = datetime.now(UTC)
        delivery = await notifier.post("hello xoxb-1234567890-abcdefghij", [{"type": "divider"}])
        assert delivery.ok and delivery.attempts == 2 and delivery.outcome == "delivered"
        assert datetime.now(UTC) - loop_started >= timedelta(seconds=1)
        assert slack.messages[-1] == {"text": "hello [REDACTED]", "blocks": [{"type": "divider"}]}

        slack.fail_next(500, times=3)
        failed = await notifier.post("down")
        assert not failed.ok and failed.attempts == 3 and failed.status_code == 500
        assert failed.outcome == "failed" and "500" in (failed.error or "")

        slack.fail_next(429, times=1, retry_after=3600)  # past the bound: give up at once
        limited = await notifier.post("later")
        assert not limited.ok and limited.attempts == 1 and "limit" in (limited.error or "")

    async with SlackNotifier(slack.url.replace("/services/", "/nope/")) as wrong:
        refused = await wrong.post("x")
        assert not refused.ok and refused.attempts == 1 and refused.status_code == 404

    async with SlackNotifier("http://127.0.0.1:9/hook", backoff_s=0.01, max_attempts=2) as unreachable:
        down = await unreachable.post("x")
        assert not down.ok and down.attempts == 2 and down.status_code is None and "Connect" in (down.error or "")

    async with SlackNotifier(None) as disabled:
        off = await disabled.post("x")
        assert off.outcome == "disabled" and "COO_SLACK_WEBHOOK_URL" in (off.error or "")

    with pytest.raises(ValueError, match="COO_SLACK_WEBHOOK_URL"):
        SlackNotifier("hooks.slack.invalid/x")
