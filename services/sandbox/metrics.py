"""The sandbox's Prometheus metrics (DESIGN §8): executions by outcome, and their duration."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class SandboxMetrics:
    registry: CollectorRegistry
    executions: Counter = field(init=False)
    duration: Histogram = field(init=False)

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
