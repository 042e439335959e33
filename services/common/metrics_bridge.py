"""A service's Prometheus registry exported as OTLP metrics (cumulative), every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds (default 60000) and once more at shutdown.

The registry stays the one source of truth (``/metrics`` serves it); this only translates it:
counters → monotonic sums, gauges → gauges, histograms → explicit-bucket histograms."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PromMetric

from services.common.logging import get_logger

log = get_logger(__name__)

_SCOPE = InstrumentationScope("coo.prometheus")
_START_NS = time.time_ns()


def _interval_s() -> float:
    raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if not raw:
        return 60.0
    try:
        value = float(raw) / 1000
    except ValueError as exc:
        raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not a number of milliseconds") from exc
    if value <= 0:
        raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} must be positive")
    return value


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _created(family: PromMetric) -> dict[tuple[tuple[str, str], ...], int]:
    return {_key(s.labels): int(s.value * 1e9) for s in family.samples if s.name.endswith("_created")}


def _counter(family: PromMetric, now: int) -> Metric | None:
    starts = _created(family)
    points = [
        NumberDataPoint(
            attributes=dict(s.labels),
            start_time_unix_nano=starts.get(_key(s.labels), _START_NS),
            time_unix_nano=now,
            value=s.value,
        )
        for s in family.samples
        if s.name.endswith("_total")
    ]
    if not points:
        return None
    data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
    return Metric(name=family.name, description=family.documentation, unit=None, data=data)


def _gauge(family: PromMetric, now: int) -> Metric | None:
    points = [
        NumberDataPoint(attributes=dict(s.labels), start_time_unix_nano=_START_NS, time_unix_nano=now, value=s.value)
        for s in family.samples
    ]
    if not points:
        return None
    return Metric(name=family.name, description=family.documentation, unit=None, data=Gauge(data_points=points))


def _histogram(family: PromMetric, now: int) -> Metric | None:
    starts = _created(family)
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series.setdefault(_key(labels), {"labels": labels, "buckets": [], "count": 0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            entry["count"] = int(s.value)
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
    points = []
    for key, entry in series.items():
        cumulative = sorted(entry["buckets"])
        bounds = [le for le, _ in cumulative if not math.isinf(le)]
        counts, previous = [], 0.0
        for _, value in cumulative:
            counts.append(int(value - previous))
            previous = value
        points.append(
            HistogramDataPoint(
                attributes=entry["labels"],
                start_time_unix_nano=starts.get(key, _START_NS),
                time_unix_nano=now,
                count=entry["count"],
                sum=entry["sum"],
                bucket_counts=counts,
                explicit_bounds=bounds,
                min=None,  # type: ignore[arg-type]  # Prometheus histograms keep neither; OTLP makes both optional
                max=None,  # type: ignore[arg-type]
            )
        )
    if not points:
        return None
    data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
    return Metric(name=family.name, description=family.documentation, unit=None, data=data)


def translate(registry: CollectorRegistry, resource: Resource) -> MetricsData:
    """What ``registry`` holds now, as OTLP metrics data."""
    now = time.time_ns()
    metrics: list[Metric] = []
    for family in registry.collect():
        convert = {"counter": _counter, "gauge": _gauge, "histogram": _histogram}.get(family.type)
        metric = convert(family, now) if convert is not None else None
        if metric is not None:
            metrics.append(metric)
    scope = ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])


class MetricsBridge:
    """Export ``registry`` periodically through ``exporter`` (an OTLP metric exporter)."""

    def __init__(self, registry: CollectorRegistry, exporter: Any, resource: Resource) -> None:
        self.registry = registry
        self.exporter = exporter
        self.resource = resource
        self.interval_s = _interval_s()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="otlp-metrics")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.export_once()

    async def export_once(self) -> None:
        try:
            data = translate(self.registry, self.resource)
            result = await asyncio.to_thread(self.exporter.export, data, timeout_millis=10_000)
        except Exception as exc:
            log.warning("otlp_metrics_export_failed", error=f"{type(exc).__name__}: {exc}")
            return
        if result is not MetricExportResult.SUCCESS:
            log.warning("otlp_metrics_export_failed", error=str(result))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.export_once()
        await asyncio.to_thread(self.exporter.shutdown)
