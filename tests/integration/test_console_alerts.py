"""The console's alerts page shows what Alertmanager posted (through the same query as GET
/v1/alerts), and the navigation counts the alerts still firing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator.app import create_app
from tests.conftest import API_KEY, RunningApp
from tests.integration.test_alert_webhook import payload, post, with_alerting


@pytest.fixture
async def alerting(settings: Settings) -> AsyncIterator[RunningApp]:
    app = RunningApp(create_app(with_alerting(settings, None)), settings.orchestrator_port)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_alerts_page_lists_firing_and_resolved_alerts(alerting: RunningApp) -> None:
    assert (await post(alerting, payload("firing"))).status_code == 200
    other = payload("firing", fingerprint="0000111122223333", alertname="DeadLettersGrowing", severity="warning")
    other["alerts"][0]["annotations"]["runbook_url"] = "javascript:alert(1)"
    assert (await post(alerting, other)).status_code == 200
    async with httpx.AsyncClient(base_url=alerting.url, timeout=15) as client:
        signed_in = await client.post("/console/sign-in", data={"api_key": API_KEY})
        assert signed_in.status_code == 303

        page = await client.get("/console/alerts")
        assert page.status_code == 200
        html = page.text
        assert "MissionFailureRatioHigh" in html and "DeadLettersGrowing" in html
        assert "Missions of hello fail" in html and html.count('data-status="firing"') == 2
        assert 'href="https://example.test/docs/runbooks.md#missionfailureratiohigh"' in html
        assert "javascript:" not in html  # only http(s) runbook links are made
        assert '<span class="pill pill--danger">2<span class="visually-hidden"> firing</span>' in html

        assert (await post(alerting, payload("resolved"))).status_code == 200
        firing = (await client.get("/console/alerts/table", params={"status": "firing"})).text
        assert "DeadLettersGrowing" in firing and "MissionFailureRatioHigh" in firing
        resolved = (await client.get("/console/alerts/table", params={"status": "resolved"})).text
        assert "MissionFailureRatioHigh" in resolved and "DeadLettersGrowing" not in resolved
        nav = (await client.get("/console/alerts")).text
        assert '<span class="pill pill--danger">1<span class="visually-hidden"> firing</span>' in nav
