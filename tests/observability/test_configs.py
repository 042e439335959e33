"""The collector, Tempo, Loki and Grafana configs, checked offline against the field lists their
projects publish (tests/observability/reference/), and the links between them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observability.stack_files import (
    DASHBOARDS,
    EXPORTED,
    OBSERVABILITY,
    OPTIONAL,
    ROOT,
    SLO_RECORDS,
    dashboards,
    load_yaml,
    metric_names,
    panel_queries,
    panels,
)

REFERENCE = Path(__file__).resolve().parent / "reference"
CORE_COMPONENTS = {"otlp", "memory_limiter", "batch", "otlphttp", "debug"}


def reference_lines(name: str) -> list[str]:
    return [line for line in (REFERENCE / name).read_text().splitlines() if line and not line.startswith("#")]


def key_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every mapping key; list items share their list's path."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            yield from key_paths(item, prefix)


# --- OpenTelemetry Collector ---------------------------------------------------------------------


def collector() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(OBSERVABILITY / "otel-collector.yaml")
    return config


def collector_unknown(config: dict[str, Any]) -> list[str]:
    """Components and fields of ``config`` that the collector's published config structs do not have."""
    core = set(reference_lines("otelcol-core-0.116.txt"))
    contrib = load_yaml(REFERENCE / "otelcol-contrib-components.yaml")
    unknown = []
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for name, settings in config.get(kind, {}).items():
            component = name.split("/")[0]
            if component not in CORE_COMPONENTS and component not in contrib:
                unknown.append(f"{kind}.{name}")
                continue
            allowed = core | set(contrib.get(component, ()))
            fields = key_paths(settings or {})
            unknown += [f"{kind}.{name}.{path}" for path in fields if path.split(".")[-1] not in allowed]
    return unknown


def test_collector_components_use_only_their_published_fields() -> None:
    assert collector_unknown(collector()) == []
    typo = {"processors": {"memory_limiter": {"limit_percent": 80}, "redacton": {}}}
    assert collector_unknown(typo) == ["processors.memory_limiter.limit_percent", "processors.redacton"]


def test_collector_pipelines_are_complete_and_safe() -> None:
    config = collector()
    service = config["service"]
    assert service["extensions"] == ["health_check"]
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    exporters = {"traces": "otlp/tempo", "metrics": "prometheusremotewrite", "logs": "otlphttp/loki"}
    for signal, exporter in exporters.items():
        pipeline = service["pipelines"][signal]
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["exporters"] == [exporter]
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter" and processors[-1] == "batch", signal
        assert "redaction" in processors, f"{signal} pipeline does not redact secrets"
        for kind, names in pipeline.items():
            for name in names:
                assert name in config[kind], f"{signal}: {kind} '{name}' is not defined"
    assert config["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"
    assert config["exporters"]["otlphttp/loki"]["endpoint"] == "http://loki:3100/otlp"
    assert config["exporters"]["prometheusremotewrite"]["endpoint"] == "http://prometheus:9090/api/v1/write"


def test_collector_redaction_masks_what_coo_scrubs() -> None:
    redaction = collector()["processors"]["redaction"]
    keys = [re.compile(p) for p in redaction["blocked_key_patterns"]]
    values = [re.compile(p) for p in redaction["blocked_values"]]
    for key in ("authorization", "http.request.header.authorization", "db.password", "anthropic_api_key"):
        assert any(p.fullmatch(key) for p in keys), key
    for key in ("gen_ai.usage.input_tokens", "http.route", "coo.mission_id"):
        assert not any(p.fullmatch(key) for p in keys), key
    for secret in ("sk-ant-api03-abcdefghijkl", "Bearer abcdefghijklmnop", "xoxb-1234567890-abcdef"):
        assert any(p.search(secret) for p in values), secret


# --- Tempo and Loki ------------------------------------------------------------------------------


def tempo_unknown(config: dict[str, Any]) -> list[str]:
    lines = reference_lines("tempo-2.6.txt")
    names = {line.removeprefix("name: ") for line in lines if line.startswith("name: ")}
    paths = {line for line in lines if not line.startswith("name: ") and not line.endswith(".*")}
    free = tuple(line[:-2] + "." for line in lines if line.endswith(".*"))
    return [
        path
        for path in key_paths(config)
        if not (path in paths or path.startswith(free) or path.split(".")[-1] in names)
    ]


def loki_unknown(config: dict[str, Any]) -> list[str]:
    names = set(reference_lines("loki-3.3.txt"))
    return [path for path in key_paths(config) if path.split(".")[-1] not in names]


def test_tempo_uses_only_published_fields() -> None:
    config = load_yaml(OBSERVABILITY / "tempo.yaml")
    assert tempo_unknown(config) == []
    assert tempo_unknown({"ingester": {"max_block_duraton": "5m"}}) == ["ingester.max_block_duraton"]
    receivers = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317")
    assert config["server"]["http_listen_port"] == 3200
    (remote,) = config["metrics_generator"]["storage"]["remote_write"]
    assert remote["url"] == "http://prometheus:9090/api/v1/write"


def test_loki_uses_only_published_fields() -> None:
    config = load_yaml(OBSERVABILITY / "loki.yaml")
    assert loki_unknown(config) == []
    assert loki_unknown({"limits_config": {"allow_structured_metdata": True}}) == [
        "limits_config.allow_structured_metdata"
    ]
    assert config["limits_config"]["allow_structured_metadata"] is True  # OTLP ingestion needs it
    assert config["schema_config"]["configs"][0]["schema"] == "v13"
    assert config["server"]["http_listen_port"] == 3100


# --- Grafana -------------------------------------------------------------------------------------


def datasources() -> dict[str, dict[str, Any]]:
    config = load_yaml(OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    return {ds["uid"]: ds for ds in config["datasources"]}


def referenced_uids(node: Any) -> Iterator[str]:
    """Datasource uids named by links (``datasourceUid``) and panels (``datasource: {uid}``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasourceUid" and isinstance(value, str):
                yield value
            elif key == "datasource" and isinstance(value, dict) and "uid" in value:
                yield value["uid"]
            else:
                yield from referenced_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from referenced_uids(item)


def test_datasources_link_metrics_traces_and_logs_both_ways() -> None:
    ds = datasources()
    assert {ds[uid]["type"] for uid in ds} >= {"prometheus", "tempo", "loki"}
    prom, tempo, loki = ds["coo-prometheus"], ds["coo-tempo"], ds["coo-loki"]
    assert prom["url"] == "http://prometheus:9090" and tempo["url"] == "http://tempo:3200"
    assert loki["url"] == "http://loki:3100"
    assert prom["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "coo-tempo"
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "coo-loki"
    assert tempo["jsonData"]["tracesToMetrics"]["datasourceUid"] == "coo-prometheus"
    assert tempo["jsonData"]["serviceMap"]["datasourceUid"] == "coo-prometheus"
    fields = loki["jsonData"]["derivedFields"]
    assert fields and all(f["datasourceUid"] == "coo-tempo" for f in fields)
    # The JSON-log matcher finds a structlog line's trace id.
    line = '{"event": "step_dispatched", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "service": "orchestrator"}'
    regex = next(f["matcherRegex"] for f in fields if f.get("matcherType") == "regex")
    assert re.search(regex, line).group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"  # type: ignore[union-attr]
    # Every uid a link names exists; Grafana's provisioning expands $VAR, so template variables are escaped.
    for uid in referenced_uids([ds[u]["jsonData"] for u in ds]):
        assert uid in ds, f"datasource link to unknown uid {uid}"
    text = (OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text()
    assert not re.search(r"(?<!\$)\$\{__", text), "unescaped ${__…} would be expanded by provisioning"
    tracemetric_queries = " ".join(q["query"] for q in tempo["jsonData"]["tracesToMetrics"]["queries"])
    assert metric_names(tracemetric_queries.replace("$$__tags", "")) <= EXPORTED


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    config = load_yaml(OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"  # deploy/ mounts dashboards/ there


def test_dashboards_cover_the_five_views_with_their_variables() -> None:
    boards = {board["uid"]: board for board in dashboards().values()}
    assert set(boards) == {"coo-workflows", "coo-agents", "coo-system", "coo-cost", "coo-slos"}
    variables = {uid: {v["name"] for v in board["templating"]["list"]} for uid, board in boards.items()}
    assert "workflow" in variables["coo-workflows"]
    assert "agent" in variables["coo-agents"]
    assert "service" in variables["coo-system"]
    assert {"agent", "workflow"} <= variables["coo-cost"]
    uids = set(datasources())
    for uid, board in boards.items():
        for ref in referenced_uids(board):
            assert ref in uids, f"{uid}: unknown datasource uid {ref}"
        for panel in panels(board):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "coo-prometheus", f"{uid}: {panel['title']}"
        ids = [p.get("id") for p in panels(board)]
        assert board["title"].startswith("COO / ") and len(ids) > 4


def test_dashboard_queries_read_only_exported_metrics() -> None:
    for name, board in dashboards().items():
        for title, expr in panel_queries(board):
            names = metric_names(expr)
            allowed = EXPORTED | SLO_RECORDS | (OPTIONAL if "(optional)" in title else set())
            assert names, f"{name}: '{title}' reads no metric"
            assert names <= allowed, f"{name}: '{title}' reads {sorted(names - allowed)}"
        for variable in board["templating"]["list"]:
            query = variable["query"]["query"]
            metric = re.fullmatch(r"label_values\((\S+), (\w+)\)", query)
            assert metric and metric.group(1) in EXPORTED | SLO_RECORDS, query


def test_dashboard_json_is_what_the_builder_makes() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk (dev extra) builds the dashboards")
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "build.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for path in DASHBOARDS.glob("*.json"):
        json.loads(path.read_text())
