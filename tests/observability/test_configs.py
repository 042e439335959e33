"""The collector, Tempo, Loki and Grafana configs, checked offline against the field lists of the very
versions deploy/docker-compose.yml pins (tests/observability/reference/, taken from each project's
sources at its release tag), and the links between them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observability import stack_files
from tests.observability.stack_files import (
    DASHBOARDS,
    EXPORTED,
    OBSERVABILITY,
    OPTIONAL,
    PINNED_CONFIGS,
    REFERENCE,
    ROOT,
    SLO_RECORDS,
    binary,
    dashboards,
    image_version,
    load_yaml,
    metric_names,
    panel_queries,
    panels,
    reference_file,
)


def reference_lines(service: str) -> list[str]:
    """The lines of the field list of the version of ``service`` the compose file pins."""
    path = reference_file(service)
    assert path.is_file(), f"no field list {path.name} for the pinned {service}: see {REFERENCE / 'README.md'}"
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


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


# --- the pinned versions and their references ----------------------------------------------------------


@pytest.mark.parametrize("service", sorted(PINNED_CONFIGS))
def test_every_pinned_config_has_the_reference_of_its_image(service: str) -> None:
    """Changing an image tag in deploy/docker-compose.yml fails here until the field list of that
    version is added (and the config checked against it below)."""
    version = image_version(service)
    path = reference_file(service)
    assert path.is_file(), (
        f"deploy/docker-compose.yml pins {service} {version}, but tests/observability/reference/ has no "
        f"{path.name}: build it from the project's sources at that tag (see reference/README.md)"
    )
    header = "\n".join(path.read_text().splitlines()[:6])
    assert re.search(rf"\btag v{re.escape(version)}\b", header), (
        f"{path.name} does not say it comes from tag v{version}"
    )
    assert (OBSERVABILITY / PINNED_CONFIGS[service][1]).is_file()


def test_a_tag_without_its_reference_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compose = (stack_files.COMPOSE).read_text().replace("grafana/tempo:3.0.3", "grafana/tempo:3.0.4")
    (tmp_path / "docker-compose.yml").write_text(compose)
    monkeypatch.setattr(stack_files, "COMPOSE", tmp_path / "docker-compose.yml")
    assert image_version("tempo") == "3.0.4"
    assert not reference_file("tempo").exists()


def test_only_the_pinned_versions_have_references() -> None:
    pinned = {reference_file(service).name for service in PINNED_CONFIGS}
    present = {path.name for path in REFERENCE.iterdir() if path.suffix in (".txt", ".yaml")}
    assert present == pinned, f"field lists of versions no image runs: {sorted(present - pinned)}"


# --- OpenTelemetry Collector ---------------------------------------------------------------------


def collector() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(OBSERVABILITY / "otel-collector.yaml")
    return config


def collector_reference() -> dict[str, Any]:
    reference: dict[str, Any] = load_yaml(reference_file("otel-collector"))
    return reference


def collector_unknown(config: dict[str, Any]) -> list[str]:
    """Components and fields of ``config`` that the pinned collector's config structs do not have
    (and components named by a type the release deprecated)."""
    reference = collector_reference()
    components: dict[str, dict[str, Any]] = reference["components"]
    renamed = {
        (spec["kind"], spec["deprecated_type"]): name
        for name, spec in components.items()
        if spec.get("deprecated_type")
    }
    shared = set(reference["shared"])
    unknown = []
    for kind in ("receivers", "processors", "exporters", "extensions", "connectors"):
        for name, settings in config.get(kind, {}).items():
            component = name.split("/")[0]
            if (kind, component) in renamed:
                unknown.append(f"{kind}.{name} (deprecated type: {renamed[kind, component]})")
                continue
            spec = components.get(component)
            if spec is None or spec["kind"] != kind:
                unknown.append(f"{kind}.{name}")
                continue
            allowed = shared | set(spec["fields"])
            fields = key_paths(settings or {})
            unknown += [f"{kind}.{name}.{path}" for path in fields if path.split(".")[-1] not in allowed]
    service = config.get("service", {})
    names = set(reference["service"])
    settings = {key: value for key, value in service.items() if key != "pipelines"}
    unknown += [f"service.{path}" for path in key_paths(settings) if path.split(".")[-1] not in names]
    for pipeline, spec in service.get("pipelines", {}).items():  # pipeline ids are free-form
        unknown += [f"service.pipelines.{pipeline}.{key}" for key in spec if key not in names]
    return unknown


def test_collector_components_use_only_their_published_fields() -> None:
    assert collector_unknown(collector()) == []
    typo = {"processors": {"memory_limiter": {"limit_percent": 80}, "redacton": {}}}
    assert collector_unknown(typo) == ["processors.memory_limiter.limit_percent", "processors.redacton"]
    # What 0.116 took and this release does not: the telemetry address, the exporters' old types.
    old = {
        "exporters": {"otlp/tempo": {"endpoint": "tempo:4317"}, "otlphttp/loki": {}},
        "service": {"telemetry": {"metrics": {"address": "0.0.0.0:8888"}}},
    }
    assert collector_unknown(old) == [
        "exporters.otlp/tempo (deprecated type: otlp_grpc)",
        "exporters.otlphttp/loki (deprecated type: otlp_http)",
        "service.telemetry.metrics.address",
    ]


def test_collector_pipelines_are_complete_and_safe() -> None:
    config = collector()
    service = config["service"]
    assert service["extensions"] == ["health_check"]
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317") and protocols["http"]["endpoint"].endswith(":4318")
    exporters = {"traces": "otlp_grpc/tempo", "logs": "otlp_http/loki"}
    assert set(service["pipelines"]) == set(exporters), "one pipeline per signal the services send"
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
    assert config["exporters"]["otlp_grpc/tempo"]["endpoint"] == "tempo:4317"
    assert config["exporters"]["otlp_http/loki"]["endpoint"] == "http://loki:3100/otlp"


def test_coo_metrics_reach_prometheus_once() -> None:
    """Prometheus scrapes each service's /metrics; the collector forwards no metrics (the services
    export none over OTLP), so nothing writes COO's series a second time. Its own metrics are
    served where Prometheus scrapes them."""
    config = collector()
    assert not [name for name in config["service"]["pipelines"] if name.split("/")[0] == "metrics"]
    assert not [name for name in config["exporters"] if name.split("/")[0].startswith("prometheus")]
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    own = reader["pull"]["exporter"]["prometheus"]
    assert own["host"] == "0.0.0.0", "the default (localhost) cannot be scraped from another container"
    scrape = {job["job_name"]: job for job in load_yaml(OBSERVABILITY / "prometheus.yml")["scrape_configs"]}
    assert scrape["otel-collector"]["static_configs"][0]["targets"] == [f"otel-collector:{own['port']}"]
    compose = load_yaml(stack_files.COMPOSE)
    for name in ("orchestrator", "worker", "sandbox"):
        assert compose["services"][name]["environment"]["OTEL_METRICS_EXPORTER"] == "none", name


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
    """Keys of ``config`` the pinned Tempo does not have: a key is known when its path is in the
    manifest, lies below a free-form one, or (for keys the manifest leaves out) is a field name of
    Tempo's config structs below a known key; the keys of a known map are free."""
    lines = reference_lines("tempo")
    names = {line.removeprefix("name: ") for line in lines if line.startswith("name: ")}
    maps = {line.removeprefix("map: ") for line in lines if line.startswith("map: ")}
    listed = [line for line in lines if not line.startswith(("name: ", "map: "))]
    paths = {line for line in listed if not line.endswith(".*")}
    free = tuple(line[:-1] for line in listed if line.endswith(".*"))
    known: set[str] = set()
    unknown = []
    for path in key_paths(config):
        parent, _, key = path.rpartition(".")
        parent_known = parent == "" or parent in known
        if (
            path in paths
            or path.startswith(free)
            or (parent_known and key in names)
            or (parent in known and parent.rpartition(".")[2] in maps)
        ):
            known.add(path)
        else:
            unknown.append(path)
    return unknown


def loki_unknown(config: dict[str, Any]) -> list[str]:
    lines = reference_lines("loki")
    paths = {line for line in lines if not line.endswith(".*")}
    free = tuple(line[:-1] for line in lines if line.endswith(".*"))
    return [path for path in key_paths(config) if path not in paths and not path.startswith(free)]


def test_tempo_uses_only_published_fields() -> None:
    config = load_yaml(OBSERVABILITY / "tempo.yaml")
    assert tempo_unknown(config) == []
    # Tempo 3 has no ingester, compactor nor local-blocks storage: a 2.x config is refused.
    old = {"ingester": {"max_block_duration": "5m"}, "metrics_generator": {"traces_storage": {"path": "/x"}}}
    assert tempo_unknown(old) == ["ingester", "ingester.max_block_duration", "metrics_generator.traces_storage",
                                  "metrics_generator.traces_storage.path"]  # fmt: skip
    assert tempo_unknown({"metrics_generator": {"registry": {"external_labels": {"any": "x"}}}}) == []
    assert "local-blocks" not in config["overrides"]["defaults"]["metrics_generator"]["processors"]
    receivers = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317")
    assert config["server"]["http_listen_port"] == 3200
    (remote,) = config["metrics_generator"]["storage"]["remote_write"]
    assert remote["url"] == "http://prometheus:9090/api/v1/write"
    assert config["backend_worker"]["compaction"]["block_retention"] == "168h"


def test_loki_uses_only_published_fields() -> None:
    config = load_yaml(OBSERVABILITY / "loki.yaml")
    assert loki_unknown(config) == []
    assert loki_unknown({"limits_config": {"allow_structured_metdata": True}}) == [
        "limits_config.allow_structured_metdata"
    ]
    # A known name in the wrong place is refused too.
    assert loki_unknown({"common": {"retention_period": "1d"}}) == ["common.retention_period"]
    assert config["limits_config"]["allow_structured_metadata"] is True  # OTLP ingestion needs it
    assert config["schema_config"]["configs"][0]["schema"] == "v13"
    assert config["server"]["http_listen_port"] == 3100


# --- Grafana -------------------------------------------------------------------------------------

DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"


def datasources() -> dict[str, dict[str, Any]]:
    config = load_yaml(DATASOURCES)
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
    # Every uid a link names exists.
    for uid in referenced_uids([ds[u]["jsonData"] for u in ds]):
        assert uid in ds, f"datasource link to unknown uid {uid}"
    # Grafana's provisioning expands $VAR, ${VAR} and $1 alike: every $ meant for Grafana's links or
    # for PromQL is written $$.
    assert "$" not in DATASOURCES.read_text().replace("$$", ""), "an unescaped $ would be expanded by provisioning"
    tracemetric_queries = " ".join(q["query"] for q in tempo["jsonData"]["tracesToMetrics"]["queries"])
    assert metric_names(tracemetric_queries.replace("$$__tags", "")) <= EXPORTED


def trace_to_metrics_link(query: str, span: dict[str, str]) -> str:
    """A tracesToMetrics query as Grafana runs it for ``span`` (its attributes and resource):
    provisioning turns $$ into $, $__tags becomes the mapped tags the span has, and
    ${__span.tags["key"]} the span's value of that key."""
    tags = datasources()["coo-tempo"]["jsonData"]["tracesToMetrics"].get("tags", [])
    expr = query.replace("$$", "$")
    labels = [f'{tag.get("value") or tag["key"]}="{span[tag["key"]]}"' for tag in tags if tag["key"] in span]
    expr = expr.replace("$__tags", ", ".join(labels))
    return re.sub(r'\$\{__span\.tags\["([^"]+)"\]\}', lambda m: span[m.group(1)], expr)


def test_trace_to_metrics_finds_the_span_services_metrics(tmp_path: Path) -> None:
    """A span of coo-orchestrator on /v1/missions links to the orchestrator's series of that route
    (its metrics say service="orchestrator", as Prometheus scrapes them), not to the worker's nor
    to other routes; evaluated by promtool on series shaped like the scraped ones."""
    promtool = binary("promtool")
    queries = {q["name"]: q["query"] for q in datasources()["coo-tempo"]["jsonData"]["tracesToMetrics"]["queries"]}
    orchestrator = {"service.name": "coo-orchestrator", "http.route": "/v1/missions"}
    worker = {"service.name": "coo-worker", "http.route": "/v1/missions"}
    internal = {"service.name": "coo-worker"}  # a span with no route: every route of the service

    def series(service: str, route: str, per_minute: int, le: str | None = None) -> dict[str, str]:
        name = "coo_http_request_duration_seconds_bucket" if le else "coo_http_requests_total"
        labels = f'job="{service}", service="{service}", method="GET", route="{route}"'
        labels += f', le="{le}"' if le else ', status="200"'
        return {"series": f"{name}{{{labels}}}", "values": f"0+{per_minute}x10"}

    inputs = [
        series("orchestrator", "/v1/missions", 60),
        series("orchestrator", "/v1/agents", 30),
        series("worker", "/v1/missions", 120),
        # latency: every orchestrator request under 0.1 s, every worker request over it
        series("orchestrator", "/v1/missions", 60, le="0.1"),
        series("orchestrator", "/v1/missions", 60, le="+Inf"),
        series("worker", "/v1/missions", 0, le="0.1"),
        series("worker", "/v1/missions", 60, le="+Inf"),
    ]
    rate, latency = queries["Request rate"], queries["Request latency (p95)"]
    expectations = [
        (trace_to_metrics_link(rate, orchestrator), [('{route="/v1/missions", status="200"}', 1)]),
        (trace_to_metrics_link(rate, worker), [('{route="/v1/missions", status="200"}', 2)]),
        (trace_to_metrics_link(latency, orchestrator), [('{route="/v1/missions"}', 0.095)]),
        (trace_to_metrics_link(rate, internal), [('{route="/v1/missions", status="200"}', 2)]),
    ]
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
                    }
                    for expr, samples in expectations
                ],
            }
        ],
    }
    (tmp_path / "trace_to_metrics.yml").write_text(json.dumps(tests))
    result = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "trace_to_metrics.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
                # Metrics from Prometheus; a traces or logs panel reads Tempo or Loki.
                source = panel["datasource"]
                expected = {"prometheus": "coo-prometheus", "tempo": "coo-tempo", "loki": "coo-loki"}
                assert source["uid"] == expected.get(source.get("type", "prometheus")), f"{uid}: {panel['title']}"
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
