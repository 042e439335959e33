"""Telemetry pieces that need no running service: configuration from OTEL_* variables, span
attribute scrubbing, subjects in span names, exemplars, and the Prometheus → OTLP translation."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common import telemetry
from services.common.bus import span_subject
from services.common.logging import configure_logging, get_logger
from services.common.metrics_bridge import translate


def test_no_endpoint_means_nothing_is_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert telemetry.endpoint("traces") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert telemetry.endpoint("traces") == "http://collector:4317"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert telemetry.endpoint("traces") is None
    assert telemetry.endpoint("logs") == "http://collector:4317"


def test_protocol_is_grpc_or_http_protobuf_and_a_bad_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", raising=False)
    assert telemetry.protocol("metrics") == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert telemetry.protocol("metrics") == "grpc"
    assert type(telemetry.exporter("traces")).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='http/json' is not supported"):
        telemetry.protocol("metrics")


def test_span_attributes_are_scrubbed_by_key_and_by_value() -> None:
    scrubbed = telemetry.scrub_attributes(
        {
            "http.request.header.authorization": "Bearer abcdefgh12345678",
            "gen_ai.input.messages": '[{"content": "my key is sk-ant-api03-abcdefghijklmnop"}]',
            "coo.notes": ["password=hunter22", "fine"],
            "gen_ai.usage.input_tokens": 12,
        }
    )
    assert scrubbed["http.request.header.authorization"] == "[REDACTED]"
    assert "sk-ant-api03" not in scrubbed["gen_ai.input.messages"]
    assert scrubbed["coo.notes"] == ["password=[REDACTED]", "fine"]
    assert scrubbed["gen_ai.usage.input_tokens"] == 12


def test_span_names_keep_subjects_but_not_ids() -> None:
    assert span_subject("t1.coo.control.0b1e7a9c-4a0e-4d1c-9a5e-2f6c1d3b7e81") == "t1.coo.control.*"
    assert span_subject("coo.work.line-counter") == "coo.work.line-counter"


def test_exemplar_and_log_lines_carry_the_current_trace() -> None:
    assert telemetry.exemplar() is None
    tracer = TracerProvider().get_tracer("test")
    out = io.StringIO()
    with redirect_stdout(out):
        configure_logging("worker")
        with tracer.start_as_current_span("agent.execute") as span:
            ctx = span.get_span_context()
            sample = telemetry.exemplar()
            get_logger("t").info("attempt_finished", token="abcdefgh12345678")
        get_logger("t").info("outside")
    assert sample == {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines()[-2:])
    assert (inside["trace_id"], inside["span_id"]) == (sample["trace_id"], sample["span_id"])
    assert {"timestamp", "level", "service", "event"} <= inside.keys() and inside["service"] == "worker"
    assert inside["token"] == "[REDACTED]"
    assert outside["trace_id"] is None and outside["span_id"] is None


def test_prometheus_registry_translates_to_otlp_metrics() -> None:
    registry = CollectorRegistry()
    runs = Counter("coo_agent_runs", "runs", ["agent", "status"], registry=registry)
    runs.labels("echo", "succeeded").inc(3)
    Gauge("coo_queue_depth", "queued", registry=registry).set(7)
    duration = Histogram("coo_agent_duration_seconds", "d", ["agent"], buckets=(1, 5), registry=registry)
    for value in (0.5, 2, 9):
        duration.labels("echo").observe(value)

    data = translate(registry, Resource({"service.name": "coo-worker"}))
    (scope,) = data.resource_metrics[0].scope_metrics
    metrics = {m.name: m for m in scope.metrics}
    (point,) = metrics["coo_agent_runs"].data.data_points
    assert (dict(point.attributes or {}), point.value) == ({"agent": "echo", "status": "succeeded"}, 3)
    assert metrics["coo_agent_runs"].data.is_monotonic
    assert metrics["coo_queue_depth"].data.data_points[0].value == 7
    (hist,) = metrics["coo_agent_duration_seconds"].data.data_points
    assert (hist.count, hist.sum, list(hist.explicit_bounds), list(hist.bucket_counts)) == (3, 11.5, [1, 5], [1, 1, 1])
