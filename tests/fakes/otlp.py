"""An OTLP/HTTP receiver for tests: a real HTTP server that decodes the protobuf payloads the
services export (``/v1/traces``, ``/v1/metrics``, ``/v1/logs``) with opentelemetry-proto and keeps
them as plain records.

    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        ...
        otlp.spans, otlp.logs, otlp.metrics
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class SpanRecord:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class LogRecord:
    service: str
    body: Any
    severity: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class MetricRecord:
    service: str
    name: str
    kind: str
    points: list[dict[str, Any]]


@dataclass
class OtlpReceiver:
    host: str = "127.0.0.1"
    spans: list[SpanRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    metrics: list[MetricRecord] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415, "OTLP/HTTP protobuf only")
                    return
                try:
                    reply = receiver.receive(self.path, body)
                except ValueError as exc:
                    self.send_error(400 if "decode" in str(exc) else 404, str(exc))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- decoding ----------------------------------------------------------------------------
    def receive(self, path: str, body: bytes) -> bytes:
        with self._lock:
            self.raw_bodies.append(body)
        try:
            if path == "/v1/traces":
                self._traces(ExportTraceServiceRequest.FromString(body))
                return ExportTraceServiceResponse().SerializeToString()
            if path == "/v1/logs":
                self._logs(ExportLogsServiceRequest.FromString(body))
                return ExportLogsServiceResponse().SerializeToString()
            if path == "/v1/metrics":
                self._metrics(ExportMetricsServiceRequest.FromString(body))
                return ExportMetricsServiceResponse().SerializeToString()
        except Exception as exc:
            raise ValueError(f"cannot decode OTLP payload on {path}: {exc}") from exc
        raise ValueError(f"unknown OTLP path {path}")

    def _traces(self, request: ExportTraceServiceRequest) -> None:
        records = []
        for rs in request.resource_spans:
            service = str(attributes(rs.resource.attributes).get("service.name", ""))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    records.append(
                        SpanRecord(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes=attributes(span.attributes),
                            status_code=span.status.code,
                            status_message=span.status.message,
                            events=[{"name": e.name, **attributes(e.attributes)} for e in span.events],
                        )
                    )
        with self._lock:
            self.spans.extend(records)

    def _logs(self, request: ExportLogsServiceRequest) -> None:
        records = []
        for rl in request.resource_logs:
            service = str(attributes(rl.resource.attributes).get("service.name", ""))
            for sl in rl.scope_logs:
                for log in sl.log_records:
                    records.append(
                        LogRecord(
                            service=service,
                            body=any_value(log.body),
                            severity=log.severity_text,
                            trace_id=log.trace_id.hex(),
                            span_id=log.span_id.hex(),
                            attributes=attributes(log.attributes),
                        )
                    )
        with self._lock:
            self.logs.extend(records)

    def _metrics(self, request: ExportMetricsServiceRequest) -> None:
        records = []
        for rm in request.resource_metrics:
            service = str(attributes(rm.resource.attributes).get("service.name", ""))
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data") or ""
                    data = getattr(metric, kind) if kind else None
                    points = []
                    for point in getattr(data, "data_points", []):
                        entry: dict[str, Any] = {"attributes": attributes(point.attributes)}
                        if kind == "histogram":
                            entry.update(count=point.count, sum=point.sum)
                        else:
                            entry["value"] = point.as_double if point.HasField("as_double") else point.as_int
                        points.append(entry)
                    records.append(MetricRecord(service=service, name=metric.name, kind=kind, points=points))
        with self._lock:
            self.metrics.extend(records)

    # --- queries -----------------------------------------------------------------------------
    def trace(self, trace_id: str) -> list[SpanRecord]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[SpanRecord]:
        with self._lock:
            return [s for s in self.spans if s.name == name]
