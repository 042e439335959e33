"""One mission is one trace: the three services run as processes exporting OTLP/HTTP to a receiver
in the test, which decodes the real protobuf payloads. A two-step mission must give one trace
across all services with an intact parent chain, GenAI spans whose token counts equal the stored
results, log records in the same trace, and metric data points."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, db_fetch, wait_for
from tests.e2e.processes import Services
from tests.fakes.otlp import OtlpReceiver, SpanRecord

pytestmark = pytest.mark.e2e

WORKFLOW = {
    "name": "traced-counts",
    "steps": [
        {"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "recount", "agent": "line-counter", "depends_on": ["count"], "input": {"text": "{{ input.text }}"}},
    ],
}
CHAIN = [
    "sandbox.exec",
    "execute_tool run_command",
    "chat offline",
    "agent.iteration",
    "agent.execute",
    "step.dispatch",
    "mission.execute",
]


def otel_env(otlp: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }


async def start_traced(services: Services, otlp: OtlpReceiver, **env: str) -> None:
    for name in ("sandbox", "orchestrator", "worker"):
        services.start(name, **otel_env(otlp), **env)
    for name in ("sandbox", "orchestrator", "worker"):
        await wait_for(lambda n=name: services.ready(n), timeout_s=60, what=f"{name} ready")  # type: ignore[misc]


async def run_mission(services: Services, workflow: dict[str, Any], mission_input: dict[str, Any]) -> str:
    async with httpx.AsyncClient(
        base_url=services.url(), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        submitted = await client.post("/v1/missions", json={"workflow": workflow["name"], "input": mission_input})
        assert submitted.status_code == 202, submitted.text
        mission_id: str = submitted.json()["id"]

        async def finished() -> str | None:
            status: str = (await client.get(f"/v1/missions/{mission_id}")).json()["status"]
            return status if status in ("succeeded", "failed", "cancelled") else None

        assert await wait_for(finished, timeout_s=45, what="mission finished") == "succeeded"
    return mission_id


def ancestors(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[str]:
    names = [span.name]
    while span.parent_span_id and span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        names.append(span.name)
    return names


def is_subsequence(wanted: list[str], names: list[str]) -> bool:
    rest = iter(names)
    return all(any(name == w for name in rest) for w in wanted)


async def test_a_two_step_mission_is_one_trace_across_the_three_services(services: Services) -> None:
    with OtlpReceiver() as otlp:
        await start_traced(services, otlp)
        mission_id = await run_mission(services, WORKFLOW, {"text": "a\nb\nc\n"})

        (mission,) = await db_fetch(
            services.settings, "SELECT traceparent FROM missions WHERE id = $1::uuid", mission_id
        )
        trace_id = mission["traceparent"].split("-")[1]
        results = await db_fetch(
            services.settings,
            "SELECT s.key, r.tokens_in, r.tokens_out, r.model, r.provider, r.trace_id FROM agent_results r "
            "JOIN steps s ON s.id = r.step_id WHERE r.mission_id = $1::uuid",
            mission_id,
        )
        assert sorted(r["key"] for r in results) == ["count", "recount"]
        assert {r["trace_id"] for r in results} == {trace_id}

        def complete() -> list[SpanRecord] | None:
            spans = otlp.trace(trace_id)
            names = [s.name for s in spans]
            enough = names.count("sandbox.exec") >= 2 and names.count("agent.execute") >= 2
            if not (enough and "mission.execute" in names and names.count("step.dispatch") >= 2):
                return None
            # Each service exports in its own batches: a span's parents may arrive after it (a consumer
            # span ends after its handler). Wait until every sandbox span's chain reaches the root.
            by_id = {s.span_id: s for s in spans}
            roots = ("mission.execute", "POST /v1/missions")
            chains = [ancestors(s, by_id) for s in spans if s.name == "sandbox.exec"]
            return spans if all(chain[-1] in roots for chain in chains) else None

        spans = await wait_for(complete, timeout_s=20, what="the mission's spans exported")
        assert {s.service for s in spans} >= {"coo-orchestrator", "coo-worker", "coo-sandbox"}

        by_id = {s.span_id: s for s in spans}
        sandbox_spans = [s for s in spans if s.name == "sandbox.exec"]
        for span in sandbox_spans:
            chain = ancestors(span, by_id)
            assert is_subsequence(CHAIN, chain), chain
            assert chain[-1] in ("mission.execute", "POST /v1/missions")
        assert {s.attributes["messaging.system"] for s in spans if s.name.startswith(("send ", "process "))} == {"nats"}

        # GenAI spans: attributes and token counts equal what the persisted results say.
        agent_spans = {s.attributes["coo.step"]: s for s in spans if s.name == "agent.execute"}
        for row in results:
            chats = [s for s in spans if s.name == "chat offline" and _under(s, agent_spans[row["key"]], by_id)]
            assert chats, f"no chat span under step {row['key']}"
            for chat in chats:
                a = chat.attributes
                assert a["gen_ai.operation.name"] == "chat"
                assert a["gen_ai.provider.name"] == a["gen_ai.system"] == row["provider"] == "offline"
                assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == row["model"] == "offline"
                assert a["gen_ai.response.finish_reasons"] in (["tool_use"], ["end_turn"])
                assert "gen_ai.input.messages" not in a  # content is captured only when asked
            assert sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats) == row["tokens_in"]
            assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == row["tokens_out"]

        # Logs: OTLP records and stdout lines carry the mission's trace id.
        traced_logs = await wait_for(
            lambda: [r for r in otlp.logs if r.trace_id == trace_id], timeout_s=10, what="log records in the trace"
        )
        assert {r.body for r in traced_logs} >= {"attempt_finished", "sandbox_exec_finished"}
        assert {r.service for r in traced_logs} >= {"coo-worker", "coo-sandbox"}
        worker_lines = [json.loads(line) for line in (services.logs / "worker.log").read_text().splitlines() if line]
        finished = [line for line in worker_lines if line.get("event") == "attempt_finished"]
        assert len(finished) == 2
        for line in finished:
            assert line["trace_id"] == trace_id and line["mission_id"] == mission_id
            assert {"timestamp", "level", "service", "span_id", "step"} <= line.keys()

        # Metrics: the Prometheus registries arrive as OTLP data points.
        def exported(name: str, service: str) -> float:
            return max(
                (
                    p.get("value", p.get("count", 0))
                    for m in otlp.metrics
                    if m.name == name and m.service == service
                    for p in m.points
                ),
                default=0,
            )

        await wait_for(lambda: exported("coo_agent_runs", "coo-worker") >= 2, timeout_s=10, what="agent runs metric")
        await wait_for(
            lambda: exported("coo_sandbox_executions", "coo-sandbox") >= 2, timeout_s=10, what="sandbox metric"
        )
        await wait_for(
            lambda: exported("coo_workflow_runs", "coo-orchestrator") >= 1, timeout_s=10, what="workflow runs metric"
        )


def _under(span: SpanRecord, ancestor: SpanRecord, by_id: dict[str, SpanRecord]) -> bool:
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        if span.span_id == ancestor.span_id:
            return True
    return False
