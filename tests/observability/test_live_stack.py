"""The real Prometheus and Alertmanager against COO's services: Prometheus runs
observability/prometheus.yml (pointed at this test's services) with the rules of alerts/, every
dashboard panel's query runs through its HTTP API, and an alert travels Prometheus →
Alertmanager (observability/alertmanager.yml) → the orchestrator's webhook → the alerts table →
Slack (a local server that answers like Slack)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.cli.embedded import free_port
from services.common.settings import Settings
from tests.conftest import Stack, db_fetch, start_stack, stop_stack, wait_for
from tests.fakes.slack import FakeSlack
from tests.integration.test_alert_webhook import with_alerting
from tests.integration.test_vertical_slice import register_hello, wait_terminal
from tests.observability.stack_files import (
    ALERTS,
    OBSERVABILITY,
    binary,
    dashboards,
    load_yaml,
    panel_queries,
    with_variables,
)

TOKEN_FILE = "coo-token"
# A rule only this test loads: fires as soon as Prometheus has seen a finished mission.
TEST_RULES = {
    "groups": [
        {
            "name": "live-test",
            "rules": [
                {
                    "alert": "LiveTestMissionsFinished",
                    "expr": 'sum(coo_workflow_runs_total{status="succeeded"}) > 0',
                    "labels": {"severity": "warning"},
                    "annotations": {
                        "summary": "Prometheus saw finished missions",
                        "description": "Raised by the live stack test.",
                        "runbook_url": "docs/runbooks.md#missionfailureratiohigh",
                        "dashboard": "coo-workflows",
                    },
                }
            ],
        }
    ]
}
# Panels that must show data once missions have run (the others may be empty: no approvals,
# no budgets, no cost on the offline model, no exporters).
CORE_METRICS = ("coo_workflow_runs_total", "coo_http_requests_total", "coo_agent_runs_total", "up{")


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    url: str
    log: Path

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_process(argv: list[str], url: str, log: Path) -> Process:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=asyncio.subprocess.STDOUT)
    process = Process(proc, url, log)

    async def ready() -> bool:
        if proc.returncode is not None:
            output = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"{argv[0]} exited with {proc.returncode}:\n{output[-3000:]}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{url}/-/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_for(ready, timeout_s=60, interval_s=0.2, what=f"{argv[0]} to be ready")
    except BaseException:
        await process.stop()
        raise
    return process


def prometheus_config(stack: Stack, alertmanager_port: int, prometheus_port: int, rules: Path) -> dict[str, Any]:
    """observability/prometheus.yml, its hosts replaced by this test's, scraping every second."""
    config: dict[str, Any] = load_yaml(OBSERVABILITY / "prometheus.yml")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    ports = {
        "orchestrator": stack.settings.orchestrator_port,
        "worker": stack.settings.worker_port,
        "sandbox": stack.settings.sandbox_port,
        "prometheus": prometheus_port,
        "alertmanager": alertmanager_port,
    }
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in ports]
    for job in config["scrape_configs"]:
        if "dns_sd_configs" in job:  # a name that resolves to every replica: here, one local port
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": [], "labels": {"service": job["job_name"]}}]
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{ports[job['job_name']]}"]
    (am,) = config["alerting"]["alertmanagers"]
    am["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    config["rule_files"] = [*config["rule_files"], str(rules)]
    return config


def alertmanager_config(orchestrator_url: str, token_file: Path) -> dict[str, Any]:
    """observability/alertmanager.yml, sending to this test's orchestrator, with no waiting."""
    config: dict[str, Any] = load_yaml(OBSERVABILITY / "alertmanager.yml")
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="0s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{orchestrator_url}/webhooks/alertmanager"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@dataclass
class Live:
    stack: Stack
    prometheus: Process
    alertmanager: Process
    slack: FakeSlack


@pytest.fixture
async def live(settings: Settings, slack: FakeSlack, tmp_path: Path) -> AsyncIterator[Live]:
    prometheus_bin = binary("prometheus")
    alertmanager_bin = binary("alertmanager", "prometheus-alertmanager")
    stack = await start_stack(with_alerting(settings, slack))
    processes: list[Process] = []
    try:
        from tests.integration.test_alert_webhook import TOKEN

        (tmp_path / TOKEN_FILE).write_text(TOKEN)
        am_port, prom_port = free_port(), free_port()
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config(stack.orchestrator.url, tmp_path / TOKEN_FILE)))
        alertmanager = await start_process(
            [
                alertmanager_bin,
                f"--config.file={am_config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            f"http://127.0.0.1:{am_port}",
            tmp_path / "alertmanager.log",
        )
        processes.append(alertmanager)

        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        (prom_dir / "rules").symlink_to(ALERTS)  # where deploy/ mounts alerts/
        (prom_dir / "live-test-rules.yml").write_text(yaml.safe_dump(TEST_RULES))
        config = prometheus_config(stack, am_port, prom_port, prom_dir / "live-test-rules.yml")
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = await start_process(
            [
                prometheus_bin,
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--enable-feature=exemplar-storage",
            ],
            f"http://127.0.0.1:{prom_port}",
            tmp_path / "prometheus.log",
        )
        processes.append(prometheus)
        yield Live(stack, prometheus, alertmanager, slack)
    finally:
        for process in reversed(processes):
            await process.stop()
        await stop_stack(stack)


async def query(prometheus: Process, expr: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{prometheus.url}/api/v1/query", params={"query": expr})
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n→ {body}"
    return body


async def run_missions(stack: Stack, count: int) -> None:
    async with stack.client() as client:
        ids = []
        for i in range(count):
            answer = await client.post("/v1/missions", json={"workflow": "hello", "input": {"text": f"line {i}\n"}})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
    for mission_id in ids:
        assert (await wait_terminal(stack, mission_id, timeout_s=60))["status"] == "succeeded"


async def test_every_dashboard_query_runs_on_real_prometheus_and_core_panels_have_data(live: Live) -> None:
    def scraped(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            body = await query(live.prometheus, 'sum(coo_workflow_runs_total{status="succeeded"})')
            return bool(body["data"]["result"]) and float(body["data"]["result"][0]["value"][1]) >= count

        return check

    # Two batches, scraped in between, so that rates over the finished missions are not zero.
    await register_hello(live.stack)
    await run_missions(live.stack, 1)
    await wait_for(scraped(1), timeout_s=30, interval_s=0.5, what="Prometheus to scrape the first mission")
    await run_missions(live.stack, 2)
    await wait_for(scraped(3), timeout_s=30, interval_s=0.5, what="Prometheus to scrape the finished missions")
    async with httpx.AsyncClient(timeout=10) as client:  # as a Kubernetes readiness probe does
        for app in live.stack.apps:
            assert (await client.get(f"{app.url}/readyz")).status_code == 200

    async def rates_have_two_samples() -> bool:
        # A rate needs two samples of a series: wait for the last counters to appear to be scraped twice.
        for expr in ("rate(coo_agent_runs_total[1m])", 'rate(coo_http_requests_total{route="/readyz"}[1m])'):
            if not (await query(live.prometheus, expr))["data"]["result"]:
                return False
        return True

    await wait_for(rates_have_two_samples, timeout_s=30, interval_s=0.5, what="two scrapes of every counter")
    ups = (await query(live.prometheus, 'up{job=~"orchestrator|worker|sandbox"} == 1'))["data"]["result"]
    assert {r["metric"]["job"] for r in ups} == {"orchestrator", "worker", "sandbox"}

    empty_core = []
    checked = 0
    for name, board in dashboards().items():
        for title, expr in panel_queries(board):
            body = await query(live.prometheus, with_variables(expr))
            checked += 1
            if any(metric in expr for metric in CORE_METRICS) and not body["data"]["result"]:
                empty_core.append(f"{name}: {title}: {expr}")
        for variable in board["templating"]["list"]:
            metric, label = variable["query"]["query"][len("label_values(") : -1].split(", ")
            async with httpx.AsyncClient(timeout=10) as client:
                url = f"{live.prometheus.url}/api/v1/label/{label}/values"
                answer = await client.get(url, params={"match[]": metric})
            assert answer.status_code == 200 and answer.json()["status"] == "success"
    assert checked >= 50
    assert not empty_core, "core panels without data:\n" + "\n".join(empty_core)

    # The SLO recording rules run on real data: the mission SLO is met.
    async def recorded() -> list[Any]:
        body = await query(live.prometheus, 'slo:sli_error:ratio_rate5m{slo="mission-success"}')
        return list(body["data"]["result"])

    (sample,) = await wait_for(recorded, timeout_s=30, interval_s=0.5, what="the SLO recording rule")
    assert float(sample["value"][1]) == 0

    # An alert evaluated by Prometheus travels Alertmanager → webhook → alerts table → Slack.
    rows = await wait_for(
        lambda: db_fetch(
            live.stack.settings,
            "SELECT status, labels, notified_at FROM alerts WHERE labels->>'alertname' = 'LiveTestMissionsFinished'",
        ),
        timeout_s=60,
        interval_s=0.5,
        what="Prometheus's alert in the alerts table",
    )
    assert rows[0]["status"] == "firing"
    await wait_for(
        lambda: any("LiveTestMissionsFinished" in text for text in live.slack.texts()),
        timeout_s=30,
        what="the Slack message of Prometheus's alert",
    )


async def test_alert_pushed_to_alertmanager_reaches_slack_firing_then_resolved(live: Live) -> None:
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "MissionFailureRatioHigh", "severity": "critical", "workflow": "hello"},
        "annotations": {
            "summary": "Missions of hello are failing",
            "description": "60% of the finished missions of workflow hello failed over the last 10 minutes.",
            "runbook_url": "docs/runbooks.md#missionfailureratiohigh",
            "dashboard": "coo-workflows",
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "generatorURL": f"{live.prometheus.url}/graph",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        pushed = await client.post(f"{live.alertmanager.url}/api/v2/alerts", json=[alert])
    assert pushed.status_code == 200, pushed.text

    def messages(prefix: str) -> list[str]:
        return [t for t in live.slack.texts() if t.startswith(prefix) and "MissionFailureRatioHigh" in t]

    await wait_for(lambda: messages("[FIRING:1]"), timeout_s=30, what="the firing message in Slack")
    firing = next(m for m in live.slack.messages if m["text"].startswith("[FIRING:1] MissionFailureRatioHigh"))
    assert firing["attachments"][0]["color"] == "#E01E5A"
    section = firing["attachments"][0]["blocks"][1]["text"]["text"]
    assert "Missions of hello are failing" in section
    assert "Runbook: `docs/runbooks.md#missionfailureratiohigh`" in section
    assert "/d/coo-workflows" in section

    # Resolve it: the same alert, ended now.
    alert["endsAt"] = datetime.now(UTC).isoformat()
    async with httpx.AsyncClient(timeout=10) as client:
        resolved = await client.post(f"{live.alertmanager.url}/api/v2/alerts", json=[alert])
    assert resolved.status_code == 200, resolved.text
    await wait_for(lambda: messages("[RESOLVED:1]"), timeout_s=30, what="the resolved message in Slack")

    rows = await db_fetch(
        live.stack.settings,
        "SELECT status, fingerprint, notified_at FROM alerts WHERE labels->>'alertname' = 'MissionFailureRatioHigh' "
        "ORDER BY received_at",
    )
    assert [r["status"] for r in rows] == ["firing", "resolved"]
    assert rows[0]["fingerprint"] == rows[1]["fingerprint"]
    assert all(r["notified_at"] is not None for r in rows)
    assert len(messages("[FIRING:1]")) == 1  # Alertmanager repeats notifications; the webhook dedupes
