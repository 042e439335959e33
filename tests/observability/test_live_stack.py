"""The real Prometheus and Alertmanager against COO's services: Prometheus runs
observability/prometheus.yml (pointed at this test's services) with the rules of alerts/, every
dashboard panel's query runs through its HTTP API, every SLO is recorded from real traffic, each
COO series is stored once, and an alert travels Prometheus → Alertmanager
(observability/alertmanager.yml) → the orchestrator's webhook → the alerts table → Slack (a local
server that answers like Slack). With the orchestrator stopped, a critical alert still reaches
Slack, straight from Alertmanager, and the Watchdog reaches the dead man's switch.

The configs and rules are the shipped ones with shorter intervals: Prometheus scrapes and
evaluates every second, rule groups run every second, ``for`` holds three seconds, and Alertmanager
neither waits nor batches."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.cli.embedded import free_port
from services.common.contracts import SandboxExecRequest
from services.common.settings import Settings
from tests.conftest import Stack, db_fetch, start_stack, stop_stack, wait_for
from tests.fakes.slack import FakeSlack
from tests.integration.test_alert_webhook import with_alerting
from tests.integration.test_sandbox_service import exec_request
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
from tests.observability.test_rules import amtool_supports_url_file, for_alertmanager

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
COO_JOBS = ("orchestrator", "worker", "sandbox")
# A workflow whose agent the offline model cannot answer (no script, and an output schema no value
# satisfies): its mission fails (AGENT_CRASH).
UNANSWERABLE = {"type": "object", "required": ["x"], "properties": {"x": False}}
BROKEN = {"name": "broken", "steps": [{"id": "crash", "agent": "unscripted", "input": {}}]}
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


def fast_rules(name: str) -> dict[str, Any]:
    """alerts/<name> with the same expressions, evaluated every second and held three seconds (longer
    than Prometheus takes to scrape every target once, so that `absent()` does not fire at start)."""
    rules: dict[str, Any] = load_yaml(ALERTS / name)
    for group in rules["groups"]:
        if "interval" in group:
            group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "3s"
    return rules


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


@dataclass
class DeadMansSwitch:
    """A local HTTP server standing in for an external dead man's switch: it keeps what it is sent."""

    received: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/ping/coo"

    def start(self) -> DeadMansSwitch:
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                switch.received.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="dead-mans-switch", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def alertnames(self) -> set[str]:
        return {a["labels"]["alertname"] for payload in list(self.received) for a in payload["alerts"]}


def alertmanager_config(
    orchestrator_url: str, secrets: Path, switch: DeadMansSwitch, *, url_file: bool
) -> dict[str, Any]:
    """observability/alertmanager.yml, sending to this test's orchestrator, Slack and dead man's
    switch (the last two through the secret files it names, here under ``secrets``), with no waiting."""
    config: dict[str, Any] = for_alertmanager(load_yaml(OBSERVABILITY / "alertmanager.yml"), url_file, switch.url)
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="0s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            if "http_config" in hook:  # COO's webhook
                hook["url"] = f"{orchestrator_url}/webhooks/alertmanager"
                hook["http_config"]["authorization"]["credentials_file"] = str(secrets / TOKEN_FILE)
            elif "url_file" in hook:
                hook["url_file"] = str(secrets / "deadmansswitch_url")
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(secrets / "slack_webhook_url")
    return config


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def dead_mans_switch() -> Iterator[DeadMansSwitch]:
    switch = DeadMansSwitch().start()
    try:
        yield switch
    finally:
        switch.stop()


@dataclass
class Live:
    stack: Stack
    prometheus: Process
    alertmanager: Process
    slack: FakeSlack
    dead_mans_switch: DeadMansSwitch


@pytest.fixture
async def live(
    settings: Settings, slack: FakeSlack, dead_mans_switch: DeadMansSwitch, tmp_path: Path
) -> AsyncIterator[Live]:
    prometheus_bin = binary("prometheus")
    alertmanager_bin = binary("alertmanager", "prometheus-alertmanager")
    url_file = amtool_supports_url_file(binary("amtool"))
    stack = await start_stack(with_alerting(settings, slack))
    processes: list[Process] = []
    try:
        from tests.integration.test_alert_webhook import TOKEN

        # The secret files deploy/ mounts under /run/secrets.
        (tmp_path / TOKEN_FILE).write_text(TOKEN)
        (tmp_path / "slack_webhook_url").write_text(slack.url)
        (tmp_path / "deadmansswitch_url").write_text(dead_mans_switch.url)
        am_port, prom_port = free_port(), free_port()
        am_config = tmp_path / "alertmanager.yml"
        config = alertmanager_config(stack.orchestrator.url, tmp_path, dead_mans_switch, url_file=url_file)
        am_config.write_text(yaml.safe_dump(config))
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
        (prom_dir / "rules").mkdir(parents=True)  # where deploy/ mounts alerts/
        for name in ("alerts.yml", "slo.yml"):
            (prom_dir / "rules" / name).write_text(yaml.safe_dump(fast_rules(name)))
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
                # Alerts that fire before Alertmanager is discovered (the Watchdog, at once) are
                # sent again a second later, not a minute later.
                "--rules.alert.resend-delay=1s",
            ],
            f"http://127.0.0.1:{prom_port}",
            tmp_path / "prometheus.log",
        )
        processes.append(prometheus)
        yield Live(stack, prometheus, alertmanager, slack, dead_mans_switch)
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


async def register_broken(stack: Stack) -> None:
    async with stack.client() as client:
        assert (
            await client.put("/v1/agents/unscripted", json={"model": "offline", "output_schema": UNANSWERABLE})
        ).status_code in (200, 201)
        assert (await client.post("/v1/workflows", json=BROKEN)).status_code == 201


async def run_failures(stack: Stack) -> None:
    """A mission that fails (its agent crashes) and a sandbox command that exits non-zero."""
    async with stack.client() as client:
        answer = await client.post("/v1/missions", json={"workflow": "broken", "input": {}})
        assert answer.status_code == 202, answer.text
    assert (await wait_terminal(stack, answer.json()["id"], timeout_s=60))["status"] == "failed"
    assert (await exec_request(stack, SandboxExecRequest(argv=["false"]))).status == "failed"


async def push_alert(live: Live, alertname: str, **labels: str) -> None:
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": alertname, "severity": "warning", **labels},
        "annotations": {
            "summary": f"{alertname} (pushed by the live stack test)",
            "description": "Raised by the live stack test.",
            "runbook_url": "docs/runbooks.md#missionfailureratiohigh",
            "dashboard": "coo-workflows",
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }
    async with httpx.AsyncClient(timeout=10) as client:
        pushed = await client.post(f"{live.alertmanager.url}/api/v2/alerts", json=[alert])
    assert pushed.status_code == 200, pushed.text


async def stored_series(prometheus: Process) -> list[dict[str, str]]:
    """Every series of COO's jobs, and every series named like COO's metrics wherever it came from."""
    matchers = [("match[]", '{__name__=~"coo_.+|gen_ai_.+"}'), ("match[]", '{job=~"orchestrator|worker|sandbox"}')]
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{prometheus.url}/api/v1/series", params=matchers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


async def test_every_dashboard_query_runs_on_real_prometheus_and_core_panels_have_data(live: Live) -> None:
    def scraped(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            body = await query(live.prometheus, 'sum(coo_workflow_runs_total{status="succeeded"})')
            return bool(body["data"]["result"]) and float(body["data"]["result"][0]["value"][1]) >= count

        return check

    async def failure_scraped() -> bool:
        body = await query(live.prometheus, 'coo_workflow_runs_total{status="failed"}')
        return bool(body["data"]["result"])

    # Two batches, scraped in between, so that rates over the finished missions are not zero (a
    # counter's first sample is its start, not an increase: the failures come twice too).
    await register_hello(live.stack)
    await register_broken(live.stack)
    await run_missions(live.stack, 1)
    await run_failures(live.stack)
    await wait_for(scraped(1), timeout_s=30, interval_s=0.5, what="Prometheus to scrape the first mission")
    await wait_for(failure_scraped, timeout_s=30, interval_s=0.5, what="Prometheus to scrape the first failure")
    await run_missions(live.stack, 2)
    await run_failures(live.stack)
    await wait_for(scraped(3), timeout_s=30, interval_s=0.5, what="Prometheus to scrape the finished missions")
    async with httpx.AsyncClient(timeout=10) as client:  # as a Kubernetes readiness probe does
        for app in live.stack.apps:
            assert (await client.get(f"{app.url}/readyz")).status_code == 200

    async def rates_have_two_samples() -> bool:
        # A rate needs two samples of a series: wait for the last counters to appear to be scraped twice.
        for expr in (
            "rate(coo_agent_runs_total[1m])",
            'rate(coo_http_requests_total{route="/readyz"}[1m])',
            'rate(coo_workflow_runs_total{status="failed"}[1m])',
            'rate(coo_sandbox_executions_total{status="failed"}[1m])',
        ):
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

    # Each COO series is stored once: scraped by its job only (nothing else writes COO's metrics),
    # with no second copy of a label (`exported_service`), no two series differing only by target.
    series = [s for s in await stored_series(live.prometheus) if not s["__name__"].startswith("ALERTS")]
    series = [s for s in series if ":" not in s["__name__"]]  # scraped, not recorded
    assert {s["job"] for s in series} == set(COO_JOBS)
    assert not [s for s in series if any(label.startswith("exported_") for label in s)]
    copies = Counter(frozenset((k, v) for k, v in s.items() if k not in ("job", "instance")) for s in series)
    assert not [dict(labels) for labels, count in copies.items() if count > 1]
    assert any(s["__name__"] == "coo_http_requests_total" and s["service"] == "orchestrator" for s in series)

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

    # A second notification later, so that the alert-delivery SLO's counter moves between scrapes.
    await push_alert(live, "LiveTestSecondNotification")
    await wait_for(
        lambda: any("LiveTestSecondNotification" in text for text in live.slack.texts()),
        timeout_s=30,
        what="the second notification in Slack",
    )

    # Every SLO is recorded from the traffic, failures included: a number, not an empty result.
    slos = {r["labels"]["slo"] for g in load_yaml(ALERTS / "slo.yml")["groups"] for r in g["rules"] if "record" in r}

    async def every_slo_recorded() -> dict[str, float] | None:
        body = await query(live.prometheus, "slo:sli_error:ratio_rate5m")
        ratios = {r["metric"]["slo"]: float(r["value"][1]) for r in body["data"]["result"]}
        return ratios if set(ratios) == slos and all(math.isfinite(v) for v in ratios.values()) else None

    ratios = await wait_for(every_slo_recorded, timeout_s=45, interval_s=0.5, what="every SLO's 5-minute error ratio")
    assert ratios["mission-success"] > 0 and ratios["agent-success"] > 0  # the failed mission and attempt
    assert ratios["sandbox-success"] == 0  # a command that exits non-zero has run
    assert ratios["api-availability"] == 0 and ratios["alert-delivery"] == 0

    # The Watchdog goes to the dead man's switch, never to COO.
    await wait_for(lambda: "Watchdog" in live.dead_mans_switch.alertnames(), timeout_s=30, what="the Watchdog's ping")
    watchdog = await db_fetch(live.stack.settings, "SELECT 1 FROM alerts WHERE labels->>'alertname' = 'Watchdog'")
    assert watchdog == []


async def test_with_the_orchestrator_down_alerts_reach_slack_and_the_dead_mans_switch_directly(live: Live) -> None:
    """Nothing of COO is needed to be told that COO is down."""

    async def orchestrator_scraped() -> bool:
        return bool((await query(live.prometheus, 'up{job="orchestrator"} == 1'))["data"]["result"])

    await wait_for(orchestrator_scraped, timeout_s=30, interval_s=0.5, what="Prometheus to scrape the orchestrator")
    await live.stack.orchestrator.stop()

    def direct(alertname: str) -> list[dict[str, Any]]:
        return [
            attachment
            for message in list(live.slack.messages)
            for attachment in message.get("attachments", [])
            if alertname in str(attachment.get("title", "")) and "sent by Alertmanager directly" in attachment["title"]
        ]

    (service_down,) = await wait_for(
        lambda: direct("ServiceDown"), timeout_s=60, interval_s=0.5, what="ServiceDown in Slack, from Alertmanager"
    )
    assert service_down["title"].startswith("[FIRING:1] ServiceDown")
    assert f"orchestrator at 127.0.0.1:{live.stack.settings.orchestrator_port} is down" in service_down["text"]
    assert "Runbook: docs/runbooks.md#servicedown" in service_down["text"]
    await wait_for(lambda: "Watchdog" in live.dead_mans_switch.alertnames(), timeout_s=30, what="the Watchdog's ping")
    assert not direct("Watchdog")  # the switch's, not Slack's


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
    firing = next(m for m in live.slack.messages if m.get("text", "").startswith("[FIRING:1] MissionFailureRatioHigh"))
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
