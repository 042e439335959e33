"""Every metric name of DESIGN §8 on the /metrics of the service that owns it, with its labels; the
counters move by the mission's amounts; OpenMetrics exemplars carry the mission's trace id."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import (
    Stack,
    db_fetch,
    wait_for,
)
from tests.fakes.anthropic import MODEL, FakeAnthropic, overloaded, text, tool_use

# name (as exposed, counters with _total) → labels its samples carry (besides histogram `le`)
DESIGN_METRICS: dict[str, dict[str, set[str]]] = {
    "orchestrator": {
        "coo_workflow_runs_total": {"workflow", "status"},
        "coo_workflow_duration_seconds": {"workflow"},
        "coo_workflows_active": set(),
        "coo_approval_wait_seconds": set(),
        "coo_agent_retries_total": {"agent"},
        "coo_queue_depth": set(),
        "coo_dlq_messages": set(),
        "coo_budget_exceeded_total": {"workflow"},
        "coo_http_requests_total": {"service", "method", "route", "status"},
        "coo_http_request_duration_seconds": {"service", "method", "route"},
        "coo_alert_notifications_total": {"status", "outcome"},
    },
    "worker": {
        "coo_agent_runs_total": {"agent", "status"},
        "coo_agent_duration_seconds": {"agent"},
        "coo_agent_errors_total": {"agent", "error_type"},
        "coo_llm_tokens_total": {"model", "type"},
        "coo_llm_cost_usd_total": {"model", "agent"},
        "gen_ai_client_token_usage": {
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_token_type",
        },
        "gen_ai_client_operation_duration_seconds": {
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "error_type",
        },
    },
    "sandbox": {
        "coo_sandbox_executions_total": {"status"},
        "coo_sandbox_duration_seconds": set(),
    },
}


async def scrape(url: str) -> dict[str, Metric]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(families: dict[str, Metric], exposed: str) -> list[Any]:
    family = families.get(exposed.removesuffix("_total")) or families.get(exposed)
    assert family is not None, f"{exposed} is not exposed"
    wanted = exposed if exposed.endswith("_total") else None
    return [s for s in family.samples if wanted is None or s.name == wanted]


def value(families: dict[str, Metric], exposed: str, **labels: str) -> float:
    return sum(s.value for s in samples(families, exposed) if all(s.labels.get(k) == v for k, v in labels.items()))


async def test_design_metrics_move_by_the_missions_amounts_with_trace_exemplars(
    claude: tuple[Stack, FakeAnthropic],
) -> None:
    stack, fake = claude
    fake.queue(
        overloaded(),  # the first attempt fails (LLM_UNAVAILABLE) and is retried
        tool_use("run_command", {"argv": ["wc", "-l"], "stdin": "a\nb\n"}, input_tokens=300, output_tokens=40),
        text('{"lines": 2}', input_tokens=350, output_tokens=10, cache_read=100),
    )
    workflow = {
        "name": "metered",
        "steps": [
            {
                "id": "count",
                "agent": "line-counter",
                "input": {"text": "{{ input.text }}"},
                "retry": {"max_attempts": 2, "base": 0.1, "max": 0.2},
            }
        ],
    }
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": "metered", "input": {"text": "a\nb\n"}})
        mission_id = accepted.json()["id"]

        async def finished() -> str | None:
            status: str = (await client.get(f"/v1/missions/{mission_id}")).json()["status"]
            return status if status in ("succeeded", "failed") else None

        assert await wait_for(finished, timeout_s=60, what="mission finished") == "succeeded"
    (mission,) = await db_fetch(stack.settings, "SELECT traceparent FROM missions WHERE id = $1::uuid", mission_id)
    trace_id = mission["traceparent"].split("-")[1]
    (result,) = await db_fetch(
        stack.settings, "SELECT cost_usd FROM agent_results WHERE mission_id = $1::uuid AND success", mission_id
    )

    scraped = {
        "orchestrator": await scrape(stack.orchestrator.url),
        "worker": await scrape(stack.worker.url),
        "sandbox": await scrape(stack.sandbox.url),
    }
    for service, metrics in DESIGN_METRICS.items():
        for name, labels in metrics.items():
            for sample in samples(scraped[service], name):
                assert set(sample.labels) - {"le"} == labels, (service, name, sample)

    orchestrator, worker, sandbox = scraped["orchestrator"], scraped["worker"], scraped["sandbox"]
    assert value(orchestrator, "coo_workflow_runs_total", workflow="metered", status="succeeded") == 1
    assert value(orchestrator, "coo_agent_retries_total", agent="line-counter") == 1
    assert value(worker, "coo_agent_runs_total", agent="line-counter", status="succeeded") == 1
    assert value(worker, "coo_agent_runs_total", agent="line-counter", status="failed") == 1
    assert value(worker, "coo_agent_errors_total", agent="line-counter", error_type="LLM_UNAVAILABLE") == 1
    assert value(worker, "coo_llm_tokens_total", model=MODEL, type="input") == 650
    assert value(worker, "coo_llm_tokens_total", model=MODEL, type="output") == 50
    assert value(worker, "coo_llm_tokens_total", model=MODEL, type="cache_read") == 100
    cost = value(worker, "coo_llm_cost_usd_total", model=MODEL, agent="line-counter")
    assert Decimal(str(cost)).quantize(Decimal("1e-9")) == Decimal(str(result["cost_usd"])).quantize(Decimal("1e-9"))
    assert value(sandbox, "coo_sandbox_executions_total", status="succeeded") == 1
    input_counts = [
        s.value
        for s in samples(worker, "gen_ai_client_token_usage")
        if s.name == "gen_ai_client_token_usage_count" and s.labels["gen_ai_token_type"] == "input"
    ]
    assert input_counts == [2]  # two successful model calls (the overloaded one has no usage)

    def exemplar_traces(families: dict[str, Metric], name: str) -> set[str]:
        return {s.exemplar.labels["trace_id"] for s in samples(families, name) if s.exemplar is not None}

    assert trace_id in exemplar_traces(orchestrator, "coo_workflow_runs_total")
    assert trace_id in exemplar_traces(orchestrator, "coo_workflow_duration_seconds")
    assert trace_id in exemplar_traces(worker, "coo_agent_runs_total")
    assert trace_id in exemplar_traces(worker, "coo_llm_tokens_total")
    assert trace_id in exemplar_traces(worker, "gen_ai_client_operation_duration_seconds")
    assert trace_id in exemplar_traces(sandbox, "coo_sandbox_executions_total")
    assert trace_id in exemplar_traces(sandbox, "coo_sandbox_duration_seconds")


async def test_operator_metrics_show_the_process_the_pool_the_bus_and_the_slots(stack: Stack) -> None:
    workflow = {"name": "op", "steps": [{"id": "a", "agent": "echo", "input": {"v": 1}}]}
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": "op", "input": {}})
        mission_id = accepted.json()["id"]

        async def finished() -> bool:
            return bool((await client.get(f"/v1/missions/{mission_id}")).json()["status"] == "succeeded")

        await wait_for(finished, timeout_s=30, what="mission succeeded")

    work_stream = f"{stack.settings.bus_prefix}_COO_WORK"

    async def sampled() -> dict[str, Metric] | None:  # the bus is sampled every few seconds
        families = await scrape(stack.orchestrator.url)
        pending = samples(families, "coo_nats_consumer_pending") if "coo_nats_consumer_pending" in families else []
        return families if any(s.labels["stream"] == work_stream for s in pending) else None

    orchestrator = await wait_for(sampled, timeout_s=15, what="JetStream consumers sampled")
    worker = await scrape(stack.worker.url)
    sandbox = await scrape(stack.sandbox.url)
    for families in (orchestrator, worker, sandbox):
        assert value(families, "process_cpu_seconds_total") > 0
        assert value(families, "process_resident_memory_bytes") > 0
        assert samples(families, "python_info") and samples(families, "python_gc_collections_total")
        states = {s.labels["state"]: s.value for s in samples(families, "coo_db_pool_connections")}
        assert (
            set(states) == {"in_use", "idle", "waiting"}
            and states["in_use"] + states["idle"] >= 1
            and states["waiting"] == 0
        )
    consumers = {
        (s.labels["stream"], s.labels["consumer"]): s.value for s in samples(orchestrator, "coo_nats_consumer_pending")
    }
    work = [key for key in consumers if key[0] == work_stream and key[1].endswith("worker-all")]
    assert len(work) == 1, consumers
    assert consumers[work[0]] == 0, consumers  # the mission's work item was delivered
    assert {key for key in consumers if key[0] != work_stream}, "the events stream's consumers are sampled too"
    assert samples(orchestrator, "coo_nats_consumer_redelivered")
    started = [s for s in samples(orchestrator, "coo_step_schedule_to_start_seconds") if s.name.endswith("_count")]
    assert [(s.labels["agent"], s.value) for s in started] == [("echo", 1)]
    slots = {s.labels["state"]: s.value for s in samples(worker, "coo_worker_slots")}
    assert slots == {"busy": 0, "free": stack.settings.worker_concurrency}
