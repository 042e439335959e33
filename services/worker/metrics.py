"""The worker's Prometheus metrics (DESIGN §8). Label values are bounded: agent and model names,
statuses, error and token types — never ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.errors import ErrorType
from services.common.status import StepStatus, ToolCallStatus
from services.common.telemetry import exemplar
from services.worker.llm.base import Usage

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# OpenTelemetry GenAI semantic conventions: token usage buckets
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    agent_runs: Counter = field(init=False)
    agent_duration: Histogram = field(init=False)
    agent_errors: Counter = field(init=False)
    llm_tokens: Counter = field(init=False)
    llm_cost: Counter = field(init=False)
    llm_cost_unknown: Counter = field(init=False)
    genai_tokens: Histogram = field(init=False)
    genai_duration: Histogram = field(init=False)
    work_deferred: Counter = field(init=False)
    slots: Gauge = field(init=False)
    github_failures: Counter = field(init=False)
    tool_calls: Counter = field(init=False)
    tool_call_duration: Histogram = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.agent_runs = Counter("coo_agent_runs", "Agent attempts run, by outcome", ["agent", "status"], registry=r)
        self.agent_duration = Histogram(
            "coo_agent_duration_seconds", "One agent attempt", ["agent"], registry=r, buckets=_DURATION_BUCKETS
        )
        self.agent_errors = Counter(
            "coo_agent_errors", "Failed agent attempts, by error type", ["agent", "error_type"], registry=r
        )
        self.llm_tokens = Counter(
            "coo_llm_tokens", "Model tokens (input, output, cache_read, cache_write)", ["model", "type"], registry=r
        )
        self.llm_cost = Counter("coo_llm_cost_usd", "Model cost in USD", ["model", "agent"], registry=r)
        self.llm_cost_unknown = Counter(
            "coo_llm_cost_unknown", "Model calls whose cost is unknown (no price for the model)", ["model"], registry=r
        )
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per model call (OpenTelemetry GenAI)",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
            registry=r,
            buckets=_TOKEN_BUCKETS,
        )
        self.genai_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of one model call (OpenTelemetry GenAI)",
            ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
            registry=r,
            buckets=_DURATION_BUCKETS,
        )
        self.slots = Gauge(
            "coo_worker_slots",
            "This worker's attempt slots (COO_WORKER_CONCURRENCY): busy running an attempt, or free",
            ["state"],
            registry=r,
        )
        self.work_deferred = Counter(
            "coo_worker_deferred", "Work items left in the queue because their mission is paused", registry=r
        )

        self.github_failures = Counter(
            "coo_github_failures",
            "GitHub calls of the github-pr agent that failed, by mode (fail_fast, best_effort) and HTTP status "
            "(or timeout, network)",
            ["mode", "status"],
            registry=r,
        )

        self.tool_calls = Counter(
            "coo_tool_calls",
            "Calls of MCP servers' tools, by server, tool and status (ok, error, timeout)",
            ["server", "tool", "status"],
            registry=r,
        )
        self.tool_call_duration = Histogram(
            "coo_tool_call_duration_seconds",
            "One call of an MCP server's tool",
            ["server", "tool"],
            registry=r,
            buckets=_DURATION_BUCKETS,
        )

    def prepare_tool(self, server: str, tool: str) -> None:
        """A listed tool's counters at 0, so that its first error is an increase ``rate()`` sees."""
        for status in ToolCallStatus:
            self.tool_calls.labels(server, tool, status)

    def tool_call(self, *, server: str, tool: str, status: str, duration_s: float) -> None:
        sample = exemplar()  # the trace id of the tool call's execute_tool span
        self.tool_calls.labels(server, tool, status).inc(exemplar=sample)
        self.tool_call_duration.labels(server, tool).observe(duration_s, exemplar=sample)

    def slots_in_use(self, busy: int, capacity: int) -> None:
        self.slots.labels("busy").set(busy)
        self.slots.labels("free").set(max(0, capacity - busy))

    def model_call(
        self, *, provider: str, model: str, usage: Usage | None, duration_s: float, error_type: str | None
    ) -> None:
        labels = ("chat", provider, model)
        sample = exemplar()  # the trace id of the model call's span
        self.genai_duration.labels(*labels, error_type or "").observe(duration_s, exemplar=sample)
        if usage is None:
            return
        self.genai_tokens.labels(*labels, "input").observe(usage.input_tokens, exemplar=sample)
        self.genai_tokens.labels(*labels, "output").observe(usage.output_tokens, exemplar=sample)
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ):
            if count:
                self.llm_tokens.labels(model, kind).inc(count, exemplar=sample)

    def prepare_agent(self, agent: str, model: str | None, *, priced: bool) -> None:
        """Create an agent's counters at 0 before its first attempt, so that its first failure,
        error or unpriced call is an increase that ``rate()`` and ``increase()`` see (``model``:
        ``None`` for a model with no cost, the offline one)."""
        for status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
            self.agent_runs.labels(agent, status)
        for error_type in ErrorType:
            self.agent_errors.labels(agent, error_type.value)
        if model is None:
            return
        if priced:
            self.llm_cost.labels(model, agent)
        else:
            self.llm_cost_unknown.labels(model)

    def cost(self, *, model: str, agent: str, usd: Decimal | None) -> None:
        if usd is None:
            self.llm_cost_unknown.labels(model).inc()
        else:
            self.llm_cost.labels(model, agent).inc(float(usd), exemplar=exemplar())

    def attempt(self, *, agent: str, duration_s: float, error_type: str | None) -> None:
        sample = exemplar()  # the trace id of the attempt's agent.execute span
        self.agent_runs.labels(agent, StepStatus.FAILED if error_type else StepStatus.SUCCEEDED).inc(exemplar=sample)
        self.agent_duration.labels(agent).observe(duration_s, exemplar=sample)
        if error_type:
            self.agent_errors.labels(agent, error_type).inc(exemplar=sample)
