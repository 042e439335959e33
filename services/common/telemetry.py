"""OpenTelemetry for COO (DESIGN §8): traces, OTLP logs and metrics, set up from the standard
``OTEL_*`` variables only.

- One SDK ``TracerProvider`` per process, so that every span has a trace id (logs, exemplars and
  stored results carry it) even when nothing is exported. ``OTEL_SDK_DISABLED=true`` turns all of
  it off: no provider, no instrumentation, no ids.
- Export happens only when an endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal
  ``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT``), over ``grpc`` or ``http/protobuf``
  (``OTEL_EXPORTER_OTLP_PROTOCOL``, per signal too), through batch processors flushed on shutdown.
  ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none`` turns one signal off.
- ``service.name`` is ``OTEL_SERVICE_NAME`` or ``coo-<service>``; ``OTEL_RESOURCE_ATTRIBUTES`` adds to it.
- Every exported span passes through the scrubber (attributes, event attributes, status).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from services.common.log_export import set_otlp_logger
from services.common.scrub import REDACTED, is_secret_key, scrub_text

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry
    from sqlalchemy.ext.asyncio import AsyncEngine

    from services.common.metrics_bridge import MetricsBridge

SIGNALS = ("traces", "metrics", "logs")
PROTOCOLS = ("grpc", "http/protobuf")

__all__ = [
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "Telemetry",
    "current_trace_id",
    "current_traceparent",
    "exemplar",
    "extract_context",
    "inject_headers",
    "instrument_engine",
    "instrument_http_clients",
    "scrub_attributes",
    "sdk_disabled",
    "server_telemetry",
    "traceparent_context",
    "tracer",
]


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def sdk_disabled() -> bool:
    return _env("OTEL_SDK_DISABLED").lower() == "true"


def endpoint(signal: str) -> str | None:
    """Where ``signal`` is exported, or ``None`` (not configured, or its exporter is ``none``)."""
    if _env(f"OTEL_{signal.upper()}_EXPORTER").lower() == "none":
        return None
    return _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def protocol(signal: str) -> str:
    """``grpc`` or ``http/protobuf`` (the specification's default); anything else is refused by name."""
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    name = specific if _env(specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    value = _env(name) or "http/protobuf"
    if value not in PROTOCOLS:
        raise ValueError(f"{name}={value!r} is not supported: use one of {', '.join(PROTOCOLS)}")
    return value


def exporter(signal: str) -> Any:
    """The OTLP exporter of ``signal`` for the configured protocol; it reads its endpoint,
    headers, timeout and compression from the standard variables itself."""
    grpc = protocol(signal) == "grpc"
    if signal == "traces":
        if grpc:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            return GrpcSpans()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        return HttpSpans()
    if signal == "metrics":
        if grpc:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

            return GrpcMetrics()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

        return HttpMetrics()
    if signal == "logs":
        if grpc:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

            return GrpcLogs()
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

        return HttpLogs()
    raise ValueError(f"unknown telemetry signal '{signal}': one of {', '.join(SIGNALS)}")


# --- scrubbing what leaves as spans --------------------------------------------------------------
def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [scrub_text(v) if isinstance(v, str) else v for v in value]
    return value


# Attributes that cannot hold a secret, left as they are: SQL statements carry placeholders only
# (their parameters are never recorded), and ids are COO's own uuids and hex strings.
_NO_SECRET_KEYS = frozenset(
    {
        "db.statement",
        "db.query.text",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "db.operation.name",
        "coo.mission_id",
        "coo.step_id",
        "coo.step",
        "coo.attempt",
        "coo.agent",
        "gen_ai.agent.name",
        "messaging.system",
        "messaging.destination.name",
        "messaging.message.id",
        "http.route",
        "http.request.method",
        "http.response.status_code",
    }
)


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Span or event attributes with secrets redacted: by key (``…authorization``, ``…token``)
    and by value (API keys, bearer tokens, passwords, webhook URLs)."""
    if not attributes:
        return {}
    return {
        key: value
        if key in _NO_SECRET_KEYS
        else REDACTED
        if is_secret_key(key) and value not in (None, "")
        else _scrub_value(value)
        for key, value in attributes.items()
    }


def _scrubbed_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with its secrets redacted: itself when it holds none (nearly always), else a copy."""
    from opentelemetry.sdk.trace import Event, ReadableSpan

    status = span.status
    if status.description:
        description = scrub_text(status.description)
        if description is not status.description:
            status = Status(status.status_code, description)
    name = scrub_text(span.name)
    attributes = span.attributes or {}
    scrubbed = scrub_attributes(attributes)
    events = [(event, scrub_attributes(event.attributes)) for event in span.events]
    unchanged = (
        status is span.status
        and name is span.name
        and all(scrubbed[key] is value for key, value in attributes.items())
        and all(clean[key] is value for event, clean in events for key, value in (event.attributes or {}).items())
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrubbed,
        events=[Event(event.name, clean, event.timestamp) for event, clean in events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _scrubbing_exporter(inner: SpanExporter) -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class ScrubbingSpanExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return inner.export([_scrubbed_span(s) for s in spans])

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return inner.force_flush(timeout_millis)

    return ScrubbingSpanExporter()


# --- one set of providers per process ------------------------------------------------------------
@dataclass
class _Process:
    """The process's tracer provider, with a span processor that exporters plug into while at
    least one service of the process runs (tests run the three services in one process)."""

    resource: Resource
    provider: TracerProvider
    switch: Any
    users: int = 0
    logger_provider: LoggerProvider | None = None


_process: _Process | None = None


def _resource(service: str) -> Resource:
    from opentelemetry.sdk.resources import Resource

    from services.common.settings import instance_id

    detected = Resource.create({"service.namespace": "coo", "service.instance.id": instance_id()})
    if _env("OTEL_SERVICE_NAME") or not str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        return detected
    return detected.merge(Resource({"service.name": f"coo-{service}"}))


def _ensure_process(service: str) -> _Process:
    global _process
    if _process is None:
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        class SwitchSpanProcessor(SpanProcessor):
            """Hands spans to the exporting processor of the moment, if any."""

            def __init__(self) -> None:
                self.delegate: SpanProcessor | None = None

            def on_start(self, span: Any, parent_context: Context | None = None) -> None:
                if self.delegate is not None:
                    self.delegate.on_start(span, parent_context=parent_context)

            def on_end(self, span: ReadableSpan) -> None:
                if self.delegate is not None:
                    self.delegate.on_end(span)

            def shutdown(self) -> None:
                if self.delegate is not None:
                    self.delegate.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return self.delegate.force_flush(timeout_millis) if self.delegate is not None else True

        resource = _resource(service)
        provider = TracerProvider(resource=resource)
        switch = SwitchSpanProcessor()
        provider.add_span_processor(switch)
        trace.set_tracer_provider(provider)
        _process = _Process(resource, provider, switch)
    return _process


@dataclass
class Telemetry:
    """A service's telemetry for its lifespan: ``await stack.enter_async_context(Telemetry(...))``.

    Starts exporting traces and logs (process-wide) and the service's Prometheus ``registry`` as
    OTLP metrics, when endpoints are configured; on exit, exports what is left and flushes."""

    service: str
    registry: CollectorRegistry | None = None
    _bridge: MetricsBridge | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)

    async def __aenter__(self) -> Telemetry:
        self.start()
        if self._started and self.registry is not None and endpoint("metrics"):
            from services.common.metrics_bridge import MetricsBridge  # the OTel SDK: only when exporting

            assert _process is not None
            self._bridge = MetricsBridge(self.registry, exporter("metrics"), _process.resource)
            self._bridge.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bridge is not None:
            await self._bridge.stop()
            self._bridge = None
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        if sdk_disabled() or self._started:
            return
        process = _ensure_process(self.service)
        process.users += 1
        self._started = True
        if process.users > 1:
            return
        if endpoint("traces"):
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            process.switch.delegate = BatchSpanProcessor(_scrubbing_exporter(exporter("traces")))
        if endpoint("logs"):
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            process.logger_provider = LoggerProvider(resource=process.resource)
            process.logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter("logs")))
            set_otlp_logger(process.logger_provider.get_logger("coo"))

    def stop(self) -> None:
        """Flush and close the exporters once the process's last service stops."""
        if not self._started or _process is None:
            return
        self._started = False
        _process.users -= 1
        if _process.users > 0:
            return
        delegate, _process.switch.delegate = _process.switch.delegate, None
        if delegate is not None:
            delegate.shutdown()
        if _process.logger_provider is not None:
            set_otlp_logger(None)
            _process.logger_provider.shutdown()
            _process.logger_provider = None


# --- instrumentation -----------------------------------------------------------------------------
_instrumented_httpx = False


_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def server_telemetry() -> TelemetryConfig:
    """``FastAPI(telemetry=...)``: FastAPI's own server spans (one per request, named
    ``<METHOD> <route>``, with ``http.route`` and the stable HTTP attributes), once a tracer
    provider is set; none for the health and metrics routes, no spans per dependency, endpoint or
    serialization step, and no OTel HTTP metrics (the Prometheus ones are the service's)."""
    return {
        "tracing": not sdk_disabled(),
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": lambda scope: scope.get("path") in _UNTRACED_PATHS,
    }


def instrument_http_clients() -> None:
    """httpx client spans (the server spans are FastAPI's own: ``server_telemetry``)."""
    global _instrumented_httpx
    if sdk_disabled():
        return
    if not _instrumented_httpx:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument()
        _instrumented_httpx = True


def instrument_engine(engine: AsyncEngine, *, statements: bool) -> None:
    """One span per SQL statement on ``engine`` (never per row), when ``statements`` is asked for
    (``COO_TRACE_SQL``): a span per statement costs more than most statements do, so by default a
    unit of work has one span of its own and its statements none."""
    if sdk_disabled() or not statements:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    counter = get_meter("coo.sqlalchemy").create_up_down_counter("db.client.connections.usage")
    EngineTracer(  # type: ignore[no-untyped-call]
        trace.get_tracer("opentelemetry.instrumentation.sqlalchemy"), engine.sync_engine, counter
    )


# --- context and ids -----------------------------------------------------------------------------
_tracer: Tracer | None = None


def tracer() -> Tracer:
    """COO's tracer, made once per process (a proxy until the provider is set, which it then follows)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("coo")
    return _tracer


def inject_headers(headers: dict[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """``headers`` plus ``traceparent``/``tracestate`` of ``context`` (default: the current one)."""
    carrier = dict(headers or {})
    propagate.inject(carrier, context=context)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


def traceparent_context(traceparent: str | None) -> Context | None:
    """The context a stored ``traceparent`` stands for (``None`` when there is none)."""
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    return inject_headers().get("traceparent")


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def exemplar() -> dict[str, str] | None:
    """Exemplar labels for a Prometheus observation made in the current span (OpenMetrics only)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
