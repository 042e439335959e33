"""Builds COO's Grafana dashboards (dashboards/*.json) with grafana-foundation-sdk.

    .venv/bin/python dashboards/build.py           # rewrite the JSON files
    .venv/bin/python dashboards/build.py --check   # fail if they are out of date

Every query uses metrics the services export (DESIGN.md §8), the SLO recording rules of
alerts/slo.yml, or `up`; panels marked "(optional)" read NATS / Postgres exporter metrics and are
empty without those exporters. Datasource uids are the ones provisioned in
observability/grafana/provisioning/datasources/datasources.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, logs, loki, prometheus, stat, table, tempo, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

HERE = Path(__file__).resolve().parent
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="coo-prometheus")
LOKI = DataSourceRef(type_val="loki", uid="coo-loki")
TEMPO = DataSourceRef(type_val="tempo", uid="coo-tempo")
COO_JOBS = 'job=~"orchestrator|worker|sandbox"'

RATE = "$__rate_interval"


@dataclass(frozen=True)
class Q:
    """One PromQL query and its legend."""

    expr: str
    legend: str = ""
    exemplar: bool = False


def quantile(q: float, metric: str, by: str = "", selector: str = "") -> str:
    """``histogram_quantile`` over ``<metric>_bucket`` summed by ``le`` (and ``by``)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({labels}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def ratio(part: str, whole: str, by: str) -> str:
    """``part / whole`` summed by ``by``; 0 rather than no data when ``part`` has no series yet."""
    total = f"sum by ({by}) ({whole})"
    return f"(sum by ({by}) ({part}) or {total} * 0) / {total}"


def _target(q: Q, ref: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(q.expr).ref_id(ref).datasource(PROMETHEUS).range()
    if q.legend:
        target = target.legend_format(q.legend)
    if q.exemplar:
        target = target.exemplar(True)
    return target


def graph(title: str, queries: Sequence[Q], *, unit: str = "short", width: int = 12, description: str = "") -> Any:
    panel = timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit).span(width).height(8)
    if description:
        panel = panel.description(description)
    for i, q in enumerate(queries):
        panel = panel.with_target(_target(q, chr(ord("A") + i)))
    return panel


def single(title: str, query: Q, *, unit: str = "short", width: int = 6, description: str = "") -> Any:
    panel = stat.Panel().title(title).datasource(PROMETHEUS).unit(unit).span(width).height(4)
    if description:
        panel = panel.description(description)
    return panel.with_target(_target(Q(query.expr, query.legend), "A").instant())


def log_panel(title: str, expr: str, *, width: int = 24, description: str = "") -> Any:
    """COO's logs from Loki (the collector ships each service's structlog lines, labelled service_name)."""
    panel = logs.Panel().title(title).datasource(LOKI).span(width).height(10)
    if description:
        panel = panel.description(description)
    return panel.with_target(loki.Dataquery().expr(expr).ref_id("A").datasource(LOKI).query_type("range"))


def trace_search(title: str, traceql: str, *, width: int = 24, description: str = "") -> Any:
    """A Tempo search (TraceQL) as a table of traces, each opening the trace view."""
    panel = table.Panel().title(title).datasource(TEMPO).span(width).height(8)
    if description:
        panel = panel.description(description)
    query = tempo.TempoQuery().query_type("traceql").query(traceql).limit(20).ref_id("A").datasource(TEMPO)
    return panel.with_target(query)


def annotations() -> list[Any]:
    """Marks on every graph: a COO process (re)started — a deploy or a crash — and critical alerts firing."""
    restarts = (
        dashboard.AnnotationQuery()
        .name("Deploys and restarts")
        .datasource(PROMETHEUS)
        .enable(True)
        .icon_color("blue")
        .expr(f"changes(process_start_time_seconds{{{COO_JOBS}}}[2m]) > 0")
    )
    alerts = (
        dashboard.AnnotationQuery()
        .name("Critical alerts")
        .datasource(PROMETHEUS)
        .enable(True)
        .icon_color("red")
        .expr('ALERTS{alertstate="firing", severity="critical"}')
    )
    return [restarts, alerts]


def variable(name: str, label: str, query: str) -> Any:
    """A multi-value variable over a label's values, "All" meaning any value (``.*``)."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def board(
    uid: str, title: str, description: str, variables: Sequence[Any], rows: Sequence[tuple[str, Sequence[Any]]]
) -> Any:
    built = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["coo"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
        .annotations(annotations())
    )
    for var in variables:
        built = built.with_variable(var)
    for other_uid, other_title in DASHBOARDS:
        if other_uid != uid:
            built = built.link(
                dashboard.DashboardLink(other_title)
                .type("link")
                .url(f"/d/{other_uid}")
                .keep_time(True)
                .include_vars(False)
            )
    for row_title, panels in rows:
        built = built.with_row(dashboard.Row(row_title))
        for panel in panels:
            built = built.with_panel(panel)
    return built


DASHBOARDS = (
    ("coo-workflows", "COO / Workflow overview"),
    ("coo-agents", "COO / Agent performance"),
    ("coo-system", "COO / System health"),
    ("coo-cost", "COO / Cost"),
    ("coo-slos", "COO / SLOs"),
)

WF = 'workflow=~"$workflow"'
AG = 'agent=~"$agent"'
SV = 'service=~"$service"'
LIMITED = 'error_type="LLM_RATE_LIMITED"'


def workflow_overview() -> Any:
    return board(
        "coo-workflows",
        "COO / Workflow overview",
        "Missions: throughput, outcomes, durations, the admission queue, approvals, budget pauses, and the "
        "schedules and triggers that start them.",
        [variable("workflow", "Workflow", "label_values(coo_workflow_runs_total, workflow)")],
        [
            (
                "Now",
                [
                    single("Running missions", Q("max(coo_workflows_active)")),
                    single("Queued missions", Q("max(coo_queue_depth)")),
                    single(
                        "Success ratio (1h)",
                        Q(
                            f'sum(increase(coo_workflow_runs_total{{{WF},status="succeeded"}}[1h]))'
                            f' / sum(increase(coo_workflow_runs_total{{{WF},status=~"succeeded|failed"}}[1h]))'
                        ),
                        unit="percentunit",
                    ),
                    single("Pending approvals", Q("max(coo_approvals_pending)")),
                ],
            ),
            (
                "Missions",
                [
                    graph(
                        "Missions finished, by status",
                        [
                            Q(
                                f"sum by (workflow, status) (rate(coo_workflow_runs_total{{{WF}}}[{RATE}]))",
                                "{{workflow}} {{status}}",
                            )
                        ],
                        unit="ops",
                    ),
                    graph(
                        "Mission duration (p50, p95)",
                        [
                            Q(
                                "histogram_quantile(0.5, sum by (le, workflow) "
                                f"(rate(coo_workflow_duration_seconds_bucket{{{WF}}}[{RATE}])))",
                                "p50 {{workflow}}",
                                exemplar=True,
                            ),
                            Q(
                                "histogram_quantile(0.95, sum by (le, workflow) "
                                f"(rate(coo_workflow_duration_seconds_bucket{{{WF}}}[{RATE}])))",
                                "p95 {{workflow}}",
                                exemplar=True,
                            ),
                        ],
                        unit="s",
                    ),
                    graph(
                        "Admission queue",
                        [Q("max(coo_queue_depth)", "queued"), Q("max(coo_workflows_active)", "running")],
                    ),
                    graph(
                        "Oldest queued mission",
                        [Q("max(coo_queue_oldest_age_seconds)", "age")],
                        unit="s",
                    ),
                ],
            ),
            (
                "Approvals and budgets",
                [
                    graph(
                        "Approval wait (p50, p95)",
                        [
                            Q(
                                quantile(0.5, "coo_approval_wait_seconds"),
                                "p50",
                            ),
                            Q(
                                quantile(0.95, "coo_approval_wait_seconds"),
                                "p95",
                            ),
                        ],
                        unit="s",
                    ),
                    graph(
                        "Pending approvals and the oldest one's age",
                        [
                            Q("max(coo_approvals_pending)", "pending"),
                            Q("max(coo_approval_oldest_age_seconds)", "oldest (s)"),
                        ],
                    ),
                    graph(
                        "Budget pauses",
                        [Q(f"sum by (workflow) (increase(coo_budget_exceeded_total{{{WF}}}[{RATE}]))", "{{workflow}}")],
                    ),
                    graph("Dead letters waiting", [Q("max(coo_dlq_messages)", "dead letters")]),
                ],
            ),
            (
                "Triggers",
                [
                    graph(
                        "Schedule fires, by schedule and outcome",
                        [
                            Q(
                                f"sum by (schedule, outcome) (rate(coo_schedule_fires_total[{RATE}]))",
                                "{{schedule}} {{outcome}}",
                            )
                        ],
                        unit="ops",
                        width=8,
                        description="Fire times reached: started a mission, skipped or buffered by the overlap "
                        "policy, missed (older than the catch-up window) or failed (no mission could be made).",
                    ),
                    graph(
                        "Schedule lag (p90), by schedule",
                        [Q(quantile(0.9, "coo_schedule_lag_seconds", by="schedule"), "{{schedule}}")],
                        unit="s",
                        width=8,
                        description="Time from a fire time (plus its jitter) to its mission being created.",
                    ),
                    graph(
                        "Trigger deliveries, by trigger and outcome",
                        [
                            Q(
                                f"sum by (trigger, outcome) (rate(coo_trigger_deliveries_total[{RATE}]))",
                                "{{trigger}} {{outcome}}",
                            )
                        ],
                        unit="ops",
                        width=8,
                        description="Events and webhook deliveries: started, duplicate (a redelivery), ignored, "
                        "bad_signature (webhook refused with 401) or failed.",
                    ),
                ],
            ),
            (
                "Traces and logs",
                [
                    trace_search(
                        "Recent missions (traces)",
                        '{resource.service.namespace="coo" && name="mission.execute"}',
                        description="One trace per mission across the three services; open one for its spans.",
                    ),
                    log_panel(
                        "Warnings and errors of COO's services",
                        '{service_name=~"coo-.+"} | severity_text=~"(?i)warn.*|error|critical"',
                        description='Each line carries trace_id and mission_id: filter with | mission_id="<id>".',
                    ),
                ],
            ),
        ],
    )


def agent_performance() -> Any:
    return board(
        "coo-agents",
        "COO / Agent performance",
        "Agent attempts: outcomes, errors by type, retries, durations, model calls and sandbox commands.",
        [variable("agent", "Agent", "label_values(coo_agent_runs_total, agent)")],
        [
            (
                "Attempts",
                [
                    graph(
                        "Attempts, by outcome",
                        [
                            Q(
                                f"sum by (agent, status) (rate(coo_agent_runs_total{{{AG}}}[{RATE}]))",
                                "{{agent}} {{status}}",
                            )
                        ],
                        unit="ops",
                    ),
                    graph(
                        "Error ratio",
                        [
                            Q(
                                ratio(
                                    f'rate(coo_agent_runs_total{{{AG},status="failed"}}[{RATE}])',
                                    f"rate(coo_agent_runs_total{{{AG}}}[{RATE}])",
                                    "agent",
                                ),
                                "{{agent}}",
                            )
                        ],
                        unit="percentunit",
                    ),
                    graph(
                        "Errors, by type",
                        [
                            Q(
                                f"sum by (agent, error_type) (rate(coo_agent_errors_total{{{AG}}}[{RATE}]))",
                                "{{agent}} {{error_type}}",
                            )
                        ],
                        unit="ops",
                    ),
                    graph(
                        "Retries scheduled",
                        [Q(f"sum by (agent) (rate(coo_agent_retries_total{{{AG}}}[{RATE}]))", "{{agent}}")],
                        unit="ops",
                    ),
                    graph(
                        "Attempt duration (p50, p95)",
                        [
                            Q(
                                quantile(0.5, "coo_agent_duration_seconds", "agent", AG),
                                "p50 {{agent}}",
                                exemplar=True,
                            ),
                            Q(
                                quantile(0.95, "coo_agent_duration_seconds", "agent", AG),
                                "p95 {{agent}}",
                                exemplar=True,
                            ),
                        ],
                        unit="s",
                        width=24,
                    ),
                ],
            ),
            (
                "Model calls (OpenTelemetry GenAI)",
                [
                    graph(
                        "Model call duration p95, by model",
                        [
                            Q(
                                "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                                f"(rate(gen_ai_client_operation_duration_seconds_bucket[{RATE}])))",
                                "{{gen_ai_request_model}}",
                                exemplar=True,
                            )
                        ],
                        unit="s",
                    ),
                    graph(
                        "Tokens per call p95, by type",
                        [
                            Q(
                                "histogram_quantile(0.95, sum by (le, gen_ai_token_type) "
                                f"(rate(gen_ai_client_token_usage_bucket[{RATE}])))",
                                "{{gen_ai_token_type}}",
                            )
                        ],
                    ),
                    graph(
                        "Model calls, by model and provider",
                        [
                            Q(
                                "sum by (gen_ai_request_model, gen_ai_provider_name) "
                                f"(rate(gen_ai_client_operation_duration_seconds_count[{RATE}]))",
                                "{{gen_ai_provider_name}} {{gen_ai_request_model}}",
                            )
                        ],
                        unit="ops",
                    ),
                    graph(
                        "Rate-limited attempts",
                        [
                            Q(
                                f"sum by (agent) (rate(coo_agent_errors_total{{{AG},{LIMITED}}}[{RATE}]))",
                                "{{agent}}",
                            )
                        ],
                        unit="ops",
                    ),
                ],
            ),
            (
                "Sandbox",
                [
                    graph(
                        "Sandbox commands, by status",
                        [Q(f"sum by (status) (rate(coo_sandbox_executions_total[{RATE}]))", "{{status}}")],
                        unit="ops",
                    ),
                    graph(
                        "Sandbox command duration (p50, p95)",
                        [
                            Q(
                                quantile(0.5, "coo_sandbox_duration_seconds"),
                                "p50",
                                exemplar=True,
                            ),
                            Q(
                                quantile(0.95, "coo_sandbox_duration_seconds"),
                                "p95",
                                exemplar=True,
                            ),
                        ],
                        unit="s",
                    ),
                ],
            ),
        ],
    )


def system_health() -> Any:
    return board(
        "coo-system",
        "COO / System health",
        "Services up and ready, HTTP traffic and latency, the queue, dead letters, sandbox; "
        "NATS and Postgres (optional exporters).",
        [variable("service", "Service", "label_values(coo_http_requests_total, service)")],
        [
            (
                "Services",
                [
                    single("Orchestrators up", Q('sum(up{job="orchestrator"})')),
                    single("Workers up", Q('sum(up{job="worker"})')),
                    single("Sandboxes up", Q('sum(up{job="sandbox"})')),
                    single("Dead letters", Q("max(coo_dlq_messages)")),
                    graph("Scrape targets up", [Q('up{job=~"orchestrator|worker|sandbox"}', "{{job}} {{instance}}")]),
                    graph(
                        "Readiness answers (/readyz), by status",
                        [
                            Q(
                                "sum by (service, status) "
                                f'(increase(coo_http_requests_total{{{SV},route="/readyz"}}[{RATE}]))',
                                "{{service}} {{status}}",
                            )
                        ],
                    ),
                ],
            ),
            (
                "HTTP",
                [
                    graph(
                        "Requests, by service and status",
                        [
                            Q(
                                f"sum by (service, status) (rate(coo_http_requests_total{{{SV}}}[{RATE}]))",
                                "{{service}} {{status}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    graph(
                        "Latency p95, by service",
                        [
                            Q(
                                "histogram_quantile(0.95, sum by (le, service) "
                                f"(rate(coo_http_request_duration_seconds_bucket{{{SV}}}[{RATE}])))",
                                "{{service}}",
                                exemplar=True,
                            )
                        ],
                        unit="s",
                    ),
                    graph(
                        "5xx ratio, by service",
                        [
                            Q(
                                ratio(
                                    f'rate(coo_http_requests_total{{{SV},status=~"5.."}}[{RATE}])',
                                    f"rate(coo_http_requests_total{{{SV}}}[{RATE}])",
                                    "service",
                                ),
                                "{{service}}",
                            )
                        ],
                        unit="percentunit",
                    ),
                    graph(
                        "Slowest routes (p95)",
                        [
                            Q(
                                "topk(10, histogram_quantile(0.95, sum by (le, service, route) "
                                f"(rate(coo_http_request_duration_seconds_bucket{{{SV}}}[{RATE}]))))",
                                "{{service}} {{route}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            (
                "Work",
                [
                    graph(
                        "Queue depth and running missions",
                        [Q("max(coo_queue_depth)", "queued"), Q("max(coo_workflows_active)", "running")],
                    ),
                    graph("Dead letters waiting", [Q("max(coo_dlq_messages)", "dead letters")]),
                    graph(
                        "Sandbox commands, by status",
                        [Q(f"sum by (status) (rate(coo_sandbox_executions_total[{RATE}]))", "{{status}}")],
                        unit="ops",
                    ),
                    graph(
                        "Alert notifications, by outcome",
                        [
                            Q(
                                f"sum by (status, outcome) (increase(coo_alert_notifications_total[{RATE}]))",
                                "{{status}} {{outcome}}",
                            )
                        ],
                    ),
                ],
            ),
            (
                "Processes",
                [
                    graph(
                        "CPU, by process",
                        [Q(f"rate(process_cpu_seconds_total{{{COO_JOBS}}}[{RATE}])", "{{job}} {{instance}}")],
                        unit="percentunit",
                        description="CPU seconds per second (1 = one core).",
                    ),
                    graph(
                        "Resident memory, by process",
                        [Q(f"process_resident_memory_bytes{{{COO_JOBS}}}", "{{job}} {{instance}}")],
                        unit="bytes",
                    ),
                    graph(
                        "Open file descriptors, by process",
                        [Q(f"process_open_fds{{{COO_JOBS}}}", "{{job}} {{instance}}")],
                    ),
                    graph(
                        "Python garbage collections, by generation",
                        [
                            Q(
                                f"sum by (job, generation) (rate(python_gc_collections_total{{{COO_JOBS}}}[{RATE}]))",
                                "{{job}} gen {{generation}}",
                            )
                        ],
                        unit="ops",
                    ),
                ],
            ),
            (
                "Database pools and the bus",
                [
                    graph(
                        "Postgres connections of COO's pools, by state",
                        [Q(f"sum by (job, state) (coo_db_pool_connections{{{COO_JOBS}}})", "{{job}} {{state}}")],
                        description="waiting > 0 means requests queue for a connection: raise COO_DB_POOL_SIZE "
                        "within Postgres's max_connections (see docs/deploy.md).",
                    ),
                    graph(
                        "JetStream backlog, by consumer",
                        [Q("max by (stream, consumer) (coo_nats_consumer_pending)", "{{consumer}}")],
                        description="Messages not yet delivered: a growing work backlog means too few workers.",
                    ),
                    graph(
                        "JetStream redeliveries pending, by consumer",
                        [Q("max by (stream, consumer) (coo_nats_consumer_redelivered)", "{{consumer}}")],
                    ),
                    graph(
                        "Requests refused by the rate limit",
                        [Q(f"sum(rate(coo_rate_limited_requests_total[{RATE}]))", "429s")],
                        unit="reqps",
                    ),
                ],
            ),
            (
                "Workers",
                [
                    graph(
                        "Worker slots, busy and free",
                        [Q(f"sum by (state) (coo_worker_slots{{{COO_JOBS}}})", "{{state}}")],
                        description="Attempts running now against COO_WORKER_CONCURRENCY of every worker.",
                    ),
                    graph(
                        "Schedule to start (p50, p95), by agent",
                        [
                            Q(quantile(0.5, "coo_step_schedule_to_start_seconds", "agent"), "p50 {{agent}}"),
                            Q(quantile(0.95, "coo_step_schedule_to_start_seconds", "agent"), "p95 {{agent}}"),
                        ],
                        unit="s",
                        description="From a step's dispatch to a worker starting it: queueing in JetStream.",
                    ),
                    graph(
                        "Work items deferred (paused missions)",
                        [Q(f"sum(rate(coo_worker_deferred_total[{RATE}]))", "deferred")],
                        unit="ops",
                    ),
                ],
            ),
            (
                "NATS and Postgres (optional: need prometheus-nats-exporter / postgres_exporter)",
                [
                    graph(
                        "NATS connections and JetStream messages (optional)",
                        [
                            Q("sum(gnatsd_varz_connections)", "connections"),
                            Q("sum by (stream_name) (jetstream_stream_total_messages)", "{{stream_name}}"),
                        ],
                    ),
                    graph(
                        "Postgres up and connections (optional)",
                        [Q("max(pg_up)", "up"), Q("sum(pg_stat_database_numbackends)", "connections")],
                    ),
                ],
            ),
        ],
    )


def cost() -> Any:
    return board(
        "coo-cost",
        "COO / Cost",
        "Model spend in USD and tokens, by model and agent; budget pauses.",
        [
            variable("agent", "Agent", "label_values(coo_llm_cost_usd_total, agent)"),
            variable("workflow", "Workflow", "label_values(coo_workflow_runs_total, workflow)"),
        ],
        [
            (
                "Spend",
                [
                    single(
                        "Spend, last 24h", Q(f"sum(increase(coo_llm_cost_usd_total{{{AG}}}[24h]))"), unit="currencyUSD"
                    ),
                    single(
                        "Spend rate, last hour",
                        Q(f"sum(rate(coo_llm_cost_usd_total{{{AG}}}[1h])) * 3600"),
                        unit="currencyUSD",
                    ),
                    single("Tokens, last 24h", Q("sum(increase(coo_llm_tokens_total[24h]))")),
                    single(
                        "Budget pauses, last 24h",
                        Q(f"sum(increase(coo_budget_exceeded_total{{{WF}}}[24h]))"),
                    ),
                    graph(
                        "USD per hour, by model",
                        [Q(f"sum by (model) (rate(coo_llm_cost_usd_total{{{AG}}}[{RATE}])) * 3600", "{{model}}")],
                        unit="currencyUSD",
                    ),
                    graph(
                        "USD per hour, by agent",
                        [Q(f"sum by (agent) (rate(coo_llm_cost_usd_total{{{AG}}}[{RATE}])) * 3600", "{{agent}}")],
                        unit="currencyUSD",
                    ),
                ],
            ),
            (
                "Tokens",
                [
                    graph(
                        "Tokens per second, by model and type",
                        [Q(f"sum by (model, type) (rate(coo_llm_tokens_total[{RATE}]))", "{{model}} {{type}}")],
                    ),
                    graph(
                        "Prompt cache hit ratio, by model",
                        [
                            Q(
                                f'sum by (model) (rate(coo_llm_tokens_total{{type="cache_read"}}[{RATE}]))'
                                " / sum by (model) "
                                f'(rate(coo_llm_tokens_total{{type=~"input|cache_read|cache_write"}}[{RATE}]))',
                                "{{model}}",
                            )
                        ],
                        unit="percentunit",
                    ),
                    graph(
                        "Budget pauses, by workflow",
                        [Q(f"sum by (workflow) (increase(coo_budget_exceeded_total{{{WF}}}[{RATE}]))", "{{workflow}}")],
                    ),
                    graph(
                        "Model calls of unknown cost, by model",
                        [Q(f"sum by (model) (increase(coo_llm_cost_unknown_total[{RATE}]))", "{{model}}")],
                        description="Calls to a model with no price: their spend is missing from every figure "
                        "here and from budgets. Price the model with COO_MODEL_PRICES.",
                    ),
                ],
            ),
        ],
    )


SLO = 'slo=~"$slo"'


def slos() -> Any:
    def burn(window: str) -> Q:
        return Q(
            f"slo:sli_error:ratio_rate{window}{{{SLO}}} / on (slo) (1 - slo:objective:ratio{{{SLO}}})",
            "{{slo}}",
        )

    return board(
        "coo-slos",
        "COO / SLOs",
        "Service level objectives (alerts/slo.yml): error budget left over 30 days, burn rates per window.",
        [variable("slo", "SLO", "label_values(slo:objective:ratio, slo)")],
        [
            (
                "Error budget",
                [
                    graph(
                        "Error budget remaining (30 days)",
                        [Q(f"slo:error_budget_remaining:ratio{{{SLO}}}", "{{slo}}")],
                        unit="percentunit",
                    ),
                    graph(
                        "Service level (1 - error ratio, 1h) and objective",
                        [
                            Q(f"1 - slo:sli_error:ratio_rate1h{{{SLO}}}", "{{slo}}"),
                            Q(f"slo:objective:ratio{{{SLO}}}", "objective {{slo}}"),
                        ],
                        unit="percentunit",
                    ),
                ],
            ),
            (
                "Burn rates (1 = spending the budget exactly over 30 days; pages at 14.4 and 6, tickets at 3 and 1)",
                [
                    graph("Burn rate over 5m and 1h", [burn("5m"), burn("1h")], width=12),
                    graph("Burn rate over 30m and 6h", [burn("30m"), burn("6h")], width=12),
                    graph("Burn rate over 2h and 1d", [burn("2h"), burn("1d")], width=12),
                    graph("Burn rate over 6h and 3d", [burn("6h"), burn("3d")], width=12),
                ],
            ),
        ],
    )


BUILDERS = {
    "workflow-overview.json": workflow_overview,
    "agent-performance.json": agent_performance,
    "system-health.json": system_health,
    "cost.json": cost,
    "slos.json": slos,
}


def render() -> dict[Path, str]:
    out = {}
    for name, build in BUILDERS.items():
        model = build().build()
        data = json.loads(json.dumps(model, cls=JSONEncoder))
        for panel in data["panels"]:
            if panel.get("options") is None:
                panel["options"] = {}  # Grafana expects an object
        out[HERE / name] = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are out of date")
    args = parser.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run dashboards/build.py):", *map(str, stale), file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
