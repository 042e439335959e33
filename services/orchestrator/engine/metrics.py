"""The engine's Prometheus metrics (DESIGN §8), registered on the orchestrator's registry.

Counters and histograms are observed after the transaction that caused them commits; the gauges
(active missions, queue depth, dead letters) are read from Postgres by the housekeeping loop, so
every replica reports the same, global value (aggregate them with ``max``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.status import MISSION_TERMINAL

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.workflow_runs = Counter(
            "coo_workflow_runs",
            "Missions that reached a final status, by workflow and status.",
            ["workflow", "status"],
            registry=registry,
        )
        self.workflow_duration = Histogram(
            "coo_workflow_duration_seconds",
            "Time from submission to a final status, by workflow.",
            ["workflow"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.workflows_active = Gauge("coo_workflows_active", "Missions running now (all replicas).", registry=registry)
        self.queue_depth = Gauge("coo_queue_depth", "Missions waiting for admission (all replicas).", registry=registry)
        self.queue_oldest_age = Gauge(
            "coo_queue_oldest_age_seconds", "Age of the oldest queued mission (0 when none).", registry=registry
        )
        self.dlq_messages = Gauge(
            "coo_dlq_messages", "Dead letters not replayed yet (all replicas).", registry=registry
        )
        self.approvals_pending = Gauge(
            "coo_approvals_pending", "Steps waiting for a human decision (all replicas).", registry=registry
        )
        self.approval_oldest_age = Gauge(
            "coo_approval_oldest_age_seconds",
            "How long the oldest pending approval has waited (0 when none).",
            registry=registry,
        )
        self.approval_wait = Histogram(
            "coo_approval_wait_seconds",
            "Time a step waited for its approval decision.",
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.schedule_to_start = Histogram(
            "coo_step_schedule_to_start_seconds",
            "Time from a step attempt's dispatch to a worker starting it, by agent (queueing and worker backlog).",
            ["agent"],
            buckets=_START_BUCKETS,
            registry=registry,
        )
        self.nats_pending = Gauge(
            "coo_nats_consumer_pending",
            "Messages of a JetStream stream not yet delivered to its durable consumer (sampled; all replicas).",
            ["stream", "consumer"],
            registry=registry,
        )
        self.nats_redelivered = Gauge(
            "coo_nats_consumer_redelivered",
            "Messages a JetStream consumer has delivered more than once and not yet acknowledged (sampled).",
            ["stream", "consumer"],
            registry=registry,
        )
        self.retries = Counter(
            "coo_agent_retries", "Step attempts scheduled for a retry, by agent.", ["agent"], registry=registry
        )
        self.budget_exceeded = Counter(
            "coo_budget_exceeded",
            "Missions paused because they spent their budget, by workflow.",
            ["workflow"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "coo_rate_limited_requests", "API requests refused by the per-key rate limit.", registry=registry
        )

        self.schedule_fires = Counter(
            "coo_schedule_fires",
            "Fire times a schedule reached, by schedule and outcome: started (a mission), skipped (overlap "
            "policy), buffered (to start when the running one ends), missed (older than the catch-up window), "
            "failed (no mission could be made: the workflow or its input is refused).",
            ["schedule", "outcome"],
            registry=registry,
        )
        self.schedule_lag = Histogram(
            "coo_schedule_lag_seconds",
            "Time from a fire time (plus its jitter) to its mission being created, by schedule.",
            ["schedule"],
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.trigger_deliveries = Counter(
            "coo_trigger_deliveries",
            "Events and webhook deliveries a trigger received, by trigger, source (event, webhook) and outcome: "
            "started, duplicate (a redelivery, answered with the same missions), ignored (another event, or "
            "the filter is false), bad_signature (webhook refused with 401), failed (the input or workflow "
            "was refused).",
            ["trigger", "source", "outcome"],
            registry=registry,
        )

    def prepare_schedule(self, schedule: str) -> None:
        """Create a schedule's counters at 0, so that its first missed or skipped fire is an increase."""
        for outcome in ("started", "skipped", "buffered", "missed", "failed"):
            self.schedule_fires.labels(schedule=schedule, outcome=outcome)

    def prepare_trigger(self, trigger: str, source: str) -> None:
        """Create a trigger's counters at 0 for ``source``, so that the first bad signature is an increase."""
        for outcome in ("started", "duplicate", "ignored", "bad_signature", "failed"):
            self.trigger_deliveries.labels(trigger=trigger, source=source, outcome=outcome)

    def prepare_workflow(self, workflow: str) -> None:
        """Create a workflow's counters at 0 when its first mission starts, so that the first failure
        or budget pause is an increase (``rate()`` and ``increase()`` see it) and not a new series."""
        for status in sorted(MISSION_TERMINAL):
            self.workflow_runs.labels(workflow=workflow, status=status)
        self.budget_exceeded.labels(workflow=workflow)

    def prepare_agent(self, agent: str) -> None:
        """Create an agent's retry counter at 0 when a step of it is first dispatched."""
        self.retries.labels(agent=agent)
