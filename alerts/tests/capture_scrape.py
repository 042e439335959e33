"""Captures what Prometheus really scrapes from COO, and from Prometheus and Alertmanager themselves,
into alerts/tests/scrape/*.prom: the promtool unit tests' input series must exist there, label for
label (tests/observability/test_rules.py checks it), so a rule cannot select a series or a label
value (``le="300"`` instead of prometheus-client's ``le="300.0"``) that no service exposes.

    .venv/bin/python alerts/tests/capture_scrape.py

It starts an embedded Postgres and NATS and the three services in-process (the test fixtures'
machinery) with a local server speaking the Anthropic API, runs missions that succeed, fail after
a retry (rate-limited, then overloaded), and pause for their budget, on a priced model and on one
whose cost is unknown; sandbox commands that succeed, fail, time out and cannot start; alert
notifications that reach a local Slack and ones that do not; health, metrics, docs and unknown
routes; an API request that fails with a 500 while a table is missing; and readiness checks that
fail while NATS does not answer; then saves each
service's /metrics as Prometheus asks for it (OpenMetrics). Prometheus (with the rules of alerts/)
and Alertmanager (observability/alertmanager.yml) are started for a moment to save theirs too, and
postgres-exporter against the embedded Postgres. (The collector's own metrics, otel-collector.prom,
cannot be captured offline: that file is written by hand from the collector's documentation; nor
can the NATS exporter's, nats-exporter.prom, which no system package provides: written by hand from
its source at the tag deploy/docker-compose.yml pins.)

Run it again when a service's metrics change; commit the files it writes.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRAPE = HERE / "scrape"
sys.path.insert(0, str(ROOT))

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from services.common.contracts import SandboxExecRequest  # noqa: E402
from services.common.db.migrate import upgrade_async  # noqa: E402
from tests.conftest import (  # noqa: E402
    API_KEY,
    Infra,
    RunningApp,
    Stack,
    db_fetch,
    make_settings,
    start_stack,
    stop_stack,
    wait_for,
)
from tests.fakes.anthropic import FakeAnthropic, overloaded, rate_limited, text, tool_use  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.integration.test_alert_webhook import TOKEN, payload, with_alerting  # noqa: E402
from tests.integration.test_sandbox_service import exec_request  # noqa: E402
from tests.integration.test_vertical_slice import register_hello  # noqa: E402

# What Prometheus sends (scrape.go): OpenMetrics first, the classic text format as a fallback.
ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
HEADER = "# Captured by alerts/tests/capture_scrape.py from a real {what}; do not edit by hand.\n"

# An agent on a model no price is known for (its cost is unknown), and workflows that use it: one
# step retried once, one of two steps under a token budget.
UNPRICED = {"model": "claude-unreleased-0", "system_prompt": "Answer with a JSON object."}
RETRIED = {
    "name": "retried",
    "steps": [{"id": "ask", "agent": "unpriced", "input": {}, "retry": {"max_attempts": 2, "base": 0.1, "max": 0.2}}],
}
BUDGETED = {
    "name": "budgeted",
    "steps": [
        {"id": "first", "agent": "unpriced", "input": {}},
        {"id": "second", "agent": "unpriced", "input": {}, "depends_on": ["first"]},
    ],
}


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.get(f"{url}/metrics", headers={"Accept": ACCEPT})
    response.raise_for_status()
    return response.text


async def mission(stack: Stack, workflow: str, final: str, **extra: object) -> None:
    async with stack.client() as client:
        answer = await client.post("/v1/missions", json={"workflow": workflow, "input": {"text": "a\n"}, **extra})
        assert answer.status_code == 202, answer.text
        mission_id = answer.json()["id"]

        async def reached() -> bool:
            return bool((await client.get(f"/v1/missions/{mission_id}")).json()["status"] == final)

        await wait_for(reached, timeout_s=60, interval_s=0.2, what=f"mission of {workflow} {final}")


async def missions(stack: Stack, model: FakeAnthropic) -> None:
    """One at a time, so that the model's scripted answers go to the mission they are written for."""
    await register_hello(stack)
    async with stack.client() as client:
        assert (await client.put("/v1/agents/unpriced", json=UNPRICED)).status_code in (200, 201)
        for workflow in (RETRIED, BUDGETED):
            assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
    for _ in range(2):
        model.queue(
            tool_use("run_command", {"argv": ["wc", "-l", "-w", "-c"], "stdin": "a\n"}, input_tokens=200),
            text('{"lines": 1, "words": 1, "bytes": 2}', input_tokens=250, output_tokens=20),
        )
        await mission(stack, "hello", "succeeded")
    model.queue(rate_limited(0.1), overloaded())  # LLM_RATE_LIMITED, retried, then LLM_UNAVAILABLE: failed
    await mission(stack, "retried", "failed")
    model.queue(text('{"ok": true}', input_tokens=100, output_tokens=10))
    await mission(stack, "budgeted", "paused", budget_tokens=50)


async def sandbox_outcomes(stack: Stack) -> None:
    results = [
        await exec_request(stack, SandboxExecRequest(argv=["false"])),
        await exec_request(stack, SandboxExecRequest(argv=["sleep", "5"], timeout_s=0.2)),
        await exec_request(
            stack, SandboxExecRequest(argv=["true"], step_id=None, workspace_source="/nonexistent/coo-capture")
        ),
    ]
    assert [r.status for r in results] == ["failed", "timeout", "error"], results


async def alert_notifications(stack: Stack, slack: FakeSlack) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, headers=headers, timeout=15) as client:
        assert (await client.post("/webhooks/alertmanager", json=payload("firing"))).status_code == 200
        slack.fail_next(500, times=20)  # Slack is down: the notification fails (and is retried later)
        answer = await client.post("/webhooks/alertmanager", json=payload("firing", fingerprint="0badc0ffee000001"))
        assert answer.status_code == 200, answer.text


async def api_requests(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=15) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/no-such-route"):
            await client.get(path)
        await client.get("/v1/missions")  # no key: 401
        await client.get("/v1/missions", headers={"Authorization": f"Bearer {API_KEY}"})
    for app in (stack.worker, stack.sandbox):
        async with httpx.AsyncClient(base_url=app.url, timeout=15) as client:
            await client.get("/healthz")
            await client.get("/readyz")


async def server_errors(stack: Stack) -> None:
    """The missions table is gone for a moment (as in a botched migration): the API answers 500."""
    await db_fetch(stack.settings, "ALTER TABLE missions RENAME TO missions_away")
    try:
        async with stack.client() as client:
            answer = await client.get("/v1/missions")
            assert answer.status_code >= 500, answer.text
    finally:
        await db_fetch(stack.settings, "ALTER TABLE missions_away RENAME TO missions")


async def readiness_lost(stack: Stack, nats: EmbeddedNats) -> None:
    """NATS stops answering for a moment (SIGSTOP, then SIGCONT): every /readyz answers 503."""
    assert nats.proc is not None
    nats.proc.send_signal(signal.SIGSTOP)
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            answers = await asyncio.gather(*(client.get(f"{app.url}/readyz") for app in stack.apps))
        assert [a.status_code for a in answers] == [503, 503, 503], [a.text for a in answers]
    finally:
        nats.proc.send_signal(signal.SIGCONT)


async def consumers_sampled(stack: Stack) -> None:
    """Wait until the orchestrator has sampled the workers' durable consumer of COO_WORK too: it
    samples every few seconds, its first sample may predate the worker, and while NATS is stopped
    below it samples nothing (the gauges keep their last value)."""
    series = f'coo_nats_consumer_pending{{consumer="worker-all",stream="{stack.settings.stream("COO_WORK")}"}}'

    async def sampled() -> bool:
        return series in await scrape(stack.orchestrator.url)

    await wait_for(sampled, timeout_s=30, interval_s=0.5, what="the COO_WORK consumer sampled")


async def capture_services(workdir: Path) -> dict[str, str]:
    postgres, nats = EmbeddedPostgres(workdir / "pg"), EmbeddedNats(workdir / "nats")
    slack, model = FakeSlack().start(), FakeAnthropic()
    model_server = RunningApp(model.app(), free_port())
    await model_server.start()
    try:
        infra = Infra(postgres.start(), nats.start(), embedded=True)
        settings = make_settings(
            infra,
            workdir,
            anthropic_api_key="sk-ant-capture-0123456789",
            anthropic_base_url=model_server.url,
            bus_prefix="",  # the default: streams COO_WORK and COO_EVENTS, the same in every capture
        )
        await upgrade_async(settings)
        stack = await start_stack(with_alerting(settings, slack))
        try:
            await missions(stack, model)
            await consumers_sampled(stack)
            await sandbox_outcomes(stack)
            await alert_notifications(stack, slack)
            await api_requests(stack)
            await server_errors(stack)
            await readiness_lost(stack, nats)
            scraped = {
                "orchestrator": await scrape(stack.orchestrator.url),
                "worker": await scrape(stack.worker.url),
                "sandbox": await scrape(stack.sandbox.url),
            }
            scraped["postgres-exporter"] = await postgres_exporter(postgres, workdir)
            return scraped
        finally:
            model.close()
            await stop_stack(stack)
    finally:
        await model_server.stop()
        slack.stop()
        nats.stop()
        postgres.stop()


async def postgres_exporter(postgres: EmbeddedPostgres, workdir: Path) -> str:
    """What postgres-exporter serves about the embedded Postgres (Debian's package: the same
    ``pg_up`` as the image deploy/docker-compose.yml runs)."""
    binary = shutil.which("prometheus-postgres-exporter") or shutil.which("postgres_exporter")
    if binary is None:
        raise SystemExit("postgres-exporter must be installed (Debian: prometheus-postgres-exporter)")
    port = free_port()
    env = {"DATA_SOURCE_NAME": f"{postgres.url}?sslmode=disable", "PATH": "/usr/bin:/bin"}
    with (workdir / "postgres-exporter.log").open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220
            [binary, f"--web.listen-address=127.0.0.1:{port}"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        async def serving() -> str | None:
            try:
                return await scrape(f"http://127.0.0.1:{port}")
            except httpx.HTTPError:
                return None

        return str(await wait_for(serving, timeout_s=30, interval_s=0.2, what="postgres-exporter to serve"))
    finally:
        proc.terminate()
        proc.wait(15)


def alertmanager_config() -> dict[str, object]:
    """observability/alertmanager.yml as an Alertmanager older than 0.26 (Debian's) accepts it."""
    config: dict[str, object] = yaml.safe_load((ROOT / "observability" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:  # type: ignore[attr-defined]
        for hook in receiver.get("webhook_configs", []):
            if "url_file" in hook:
                hook["url"] = "http://127.0.0.1:9/deadmansswitch"
                del hook["url_file"]
    return config


async def run_and_scrape(argv: list[str], url: str, log: Path) -> str:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:

        async def ready() -> bool:
            if proc.poll() is not None:
                output = await asyncio.to_thread(log.read_text)
                raise RuntimeError(f"{argv[0]} exited: {output[-2000:]}")
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{url}/-/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout_s=60, interval_s=0.2, what=f"{argv[0]} to be ready")
        if "prometheus" in Path(argv[0]).name and "alertmanager" not in argv[0]:
            # Every rule group evaluated once, so that its series exist.
            async def evaluated() -> bool:
                async with httpx.AsyncClient(timeout=5) as client:
                    groups = (await client.get(f"{url}/api/v1/rules")).json()["data"]["groups"]
                return bool(groups) and all(g["lastEvaluation"][:4] != "0001" for g in groups)

            # Groups start staggered within their interval (1m for the SLOs' long windows).
            await wait_for(evaluated, timeout_s=120, interval_s=1, what="every rule group evaluated")
        return await scrape(url)
    finally:
        proc.terminate()
        proc.wait(15)


async def capture_monitoring(workdir: Path) -> dict[str, str]:
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if prometheus is None or alertmanager is None:
        raise SystemExit("prometheus and alertmanager must be installed (scripts/install-system-deps.sh)")
    am_port, prom_port = free_port(), free_port()
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config()))
    # The rules where deploy/ mounts them (/etc/prometheus/rules), so that rule_group labels read
    # as in production once the directory is renamed below.
    etc = workdir / "etc-prometheus"
    etc.mkdir()
    (etc / "rules").symlink_to(ROOT / "alerts")
    prom = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/alerts.yml", "rules/slo.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [],
    }
    (etc / "prometheus.yml").write_text(yaml.safe_dump(prom))
    am_text = await run_and_scrape(
        [
            alertmanager,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        f"http://127.0.0.1:{am_port}",
        workdir / "alertmanager.log",
    )
    prom_text = await run_and_scrape(
        [
            prometheus,
            f"--config.file={etc / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        f"http://127.0.0.1:{prom_port}",
        workdir / "prometheus.log",
    )
    return {"alertmanager": am_text, "prometheus": prom_text.replace(str(etc), "/etc/prometheus")}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="coo-capture-") as tmp:
        workdir = Path(tmp)
        services = await capture_services(workdir)
        monitoring = await capture_monitoring(workdir)
    SCRAPE.mkdir(exist_ok=True)
    for job, exposition in services.items():
        what = f"COO {job} (/metrics)" if job in ("orchestrator", "worker", "sandbox") else job
        (SCRAPE / f"{job}.prom").write_text(HEADER.format(what=what) + exposition)
    for job, exposition in monitoring.items():
        (SCRAPE / f"{job}.prom").write_text(HEADER.format(what=f"{job} (its own /metrics)") + exposition)
    print("wrote", *sorted(str(p.relative_to(ROOT)) for p in SCRAPE.glob("*.prom")))  # noqa: T201


if __name__ == "__main__":
    asyncio.run(main())
