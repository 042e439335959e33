"""What the observability tests share: the repository's files, the tools, and the metric names
services export (DESIGN.md §8)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
ALERTS = ROOT / "alerts"
DASHBOARDS = ROOT / "dashboards"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
REFERENCE = Path(__file__).resolve().parent / "reference"

# Compose service -> (image it must run, the config file of observability/ written for it, the name
# of the reference file of a version: the field lists of tests/observability/reference/).
PINNED_CONFIGS = {
    "otel-collector": ("otel/opentelemetry-collector-contrib", "otel-collector.yaml", "otelcol-contrib-{}.yaml"),
    "tempo": ("grafana/tempo", "tempo.yaml", "tempo-{}.txt"),
    "loki": ("grafana/loki", "loki.yaml", "loki-{}.txt"),
}


def image_version(service: str) -> str:
    """The version the compose file pins for ``service``'s image (its tag without a leading ``v``)."""
    image = str(load_yaml(COMPOSE)["services"][service]["image"])
    repository, _, tag = image.rpartition(":")
    expected = PINNED_CONFIGS[service][0]
    assert repository == expected, f"{service} runs {image}, not an image of {expected}"
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{service}: {image} is not pinned to a release"
    return tag.removeprefix("v")


def reference_file(service: str) -> Path:
    """The field list of the version of ``service`` the compose file pins (it may not exist)."""
    return REFERENCE / PINNED_CONFIGS[service][2].format(image_version(service))


# Names the services export; histograms also export _bucket, _count and _sum.
COUNTERS_AND_GAUGES = {
    "coo_workflow_runs_total",
    "coo_workflows_active",
    "coo_agent_runs_total",
    "coo_agent_errors_total",
    "coo_agent_retries_total",
    "coo_queue_depth",
    "coo_queue_oldest_age_seconds",
    "coo_dlq_messages",
    "coo_approvals_pending",
    "coo_approval_oldest_age_seconds",
    "coo_budget_exceeded_total",
    "coo_llm_tokens_total",
    "coo_llm_cost_usd_total",
    "coo_sandbox_executions_total",
    "coo_http_requests_total",
    "coo_alert_notifications_total",
    "coo_rate_limited_requests_total",
    "coo_llm_cost_unknown_total",
    "coo_worker_deferred_total",
    "coo_db_pool_connections",
    "coo_nats_consumer_pending",
    "coo_nats_consumer_redelivered",
    "coo_worker_slots",
    "coo_schedule_fires_total",
    "coo_trigger_deliveries_total",
    # prometheus-client's process, platform and garbage-collector collectors (runtime_metrics.py)
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "python_info",
    "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total",
    "python_gc_collections_total",
    "up",
}
HISTOGRAMS = {
    "coo_workflow_duration_seconds",
    "coo_approval_wait_seconds",
    "coo_agent_duration_seconds",
    "gen_ai_client_token_usage",
    "gen_ai_client_operation_duration_seconds",
    "coo_sandbox_duration_seconds",
    "coo_http_request_duration_seconds",
    "coo_step_schedule_to_start_seconds",
    "coo_schedule_lag_seconds",
}
SLO_RECORDS = {
    "slo:objective:ratio",
    "slo:error_budget_remaining:ratio",
    *(f"slo:sli_error:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")),
}
# Exporter metrics, allowed only in panels titled "(optional)".
OPTIONAL = {"gnatsd_varz_connections", "jetstream_stream_total_messages", "pg_up", "pg_stat_database_numbackends"}
EXPORTED = COUNTERS_AND_GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_count", "_sum")}

_METRIC = re.compile(
    r"(?<![\w:\"$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])"  # a name, not part of a longer one
    r"\s*(?=\{|\[|\)|$|\s*(?:/|\*|-|\+|>|<|==|or\b|and\b))"  # followed by what follows a series
)
_NOT_METRICS = {
    "sum", "by", "rate", "increase", "delta", "changes", "max", "min", "avg", "count", "topk", "on", "ignoring",
    "group_left", "group_right", "histogram_quantile", "vector", "or", "and", "unless", "le", "without", "absent",
    "workflow", "agent", "service", "status", "model", "type", "slo", "error_type", "route", "job", "instance",
    "gen_ai_request_model", "gen_ai_token_type", "gen_ai_provider_name", "stream_name", "outcome",
    "label_replace",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values never count
    bare = re.sub(r"\{[^}]*\}", "{}", bare)  # nor label names inside selectors
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    return {m for m in _METRIC.findall(bare) if m not in _NOT_METRICS and not m.startswith("$")}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_groups(*names: str) -> Iterator[dict[str, Any]]:
    for name in names:
        for group in load_yaml(ALERTS / name)["groups"]:
            yield from group["rules"]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target (Loki's LogQL targets have an ``expr`` too)."""
    for panel in panels(board):
        if panel.get("datasource", {}).get("type", "prometheus") != "prometheus":
            continue
        for target in panel.get("targets", []):
            if target.get("expr") and target.get("datasource", {}).get("type", "prometheus") == "prometheus":
                yield panel["title"], target["expr"]


def with_variables(expr: str, step_s: int = 15) -> str:
    """A panel query as Grafana sends it with every variable at "All"."""
    for name in ("workflow", "agent", "service", "slo"):
        expr = expr.replace(f"${name}", ".*")
    expr = expr.replace("$__rate_interval", f"{4 * step_s}s").replace("$__interval", f"{step_s}s")
    return expr.replace("$__range", "1h")


def binary(*names: str) -> str:
    """The first of ``names`` on PATH, else skip the test saying how to get it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        f"{' / '.join(names)} not installed: `make system-deps` (scripts/install-system-deps.sh) installs it "
        "from the system packages"
    )
