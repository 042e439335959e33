"""The sandbox's Prometheus metrics (DESIGN §8): executions by outcome, and their duration; whether
commands run without the jail; egress decisions of the filtering proxy."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.status import RunStatus


@dataclass
class SandboxMetrics:
    registry: CollectorRegistry
    executions: Counter = field(init=False)
    duration: Histogram = field(init=False)
    isolation_weak: Gauge = field(init=False)
    egress: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.executions = Counter(
            "coo_sandbox_executions_total", "Commands the sandbox ran, by outcome", ["status"], registry=self.registry
        )
        self.duration = Histogram(
            "coo_sandbox_duration_seconds",
            "Wall-clock time of sandbox commands",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )
        self.isolation_weak = Gauge(
            "coo_sandbox_isolation_weak",
            "1 when this sandbox runs commands without the bubblewrap jail (COO_SANDBOX_ISOLATION=weak)",
            registry=self.registry,
        )
        self.egress = Counter(
            "coo_sandbox_egress_total",
            "Connections jailed commands asked the egress proxy for, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("allowed", "refused"):
            self.egress.labels(outcome=outcome)
        for status in RunStatus:
            if status != RunStatus.RUNNING:
                self.executions.labels(status=status)
