"""What the API answers, as typed models. Each mirrors the component schema named in its
``api_schema`` (``/openapi.json``); a test checks every field and type against the live schema.
Money is ``Decimal`` (the API sends decimal strings, never floats). Unknown fields from a newer
server are ignored, so an older client keeps working."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ApiModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    api_schema: ClassVar[str]  # the OpenAPI component this model mirrors


class MissionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({MissionStatus.SUCCEEDED, MissionStatus.FAILED, MissionStatus.CANCELLED})


class Step(ApiModel):
    api_schema = "StepOut"
    key: str
    agent: str
    status: str
    attempt: int
    max_attempts: int
    depends_on: list[str]
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class Mission(ApiModel):
    api_schema = "MissionOut"
    id: uuid.UUID
    workflow: str
    workflow_version: int
    status: str
    pause_reason: str | None
    priority: int
    queue_position: int | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    budget_usd: Decimal | None
    budget_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    idempotency_key: str | None
    trigger: dict[str, Any]
    rerun_of: uuid.UUID | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[Step] | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def step(self, key: str) -> Step:
        """The step of this key (``KeyError`` when the mission has none, or was listed without steps)."""
        for step in self.steps or ():
            if step.key == key:
                return step
        raise KeyError(key)


class MissionAccepted(ApiModel):
    api_schema = "MissionAccepted"
    id: uuid.UUID
    status: str
    queue_position: int | None
    rerun_of: uuid.UUID | None = None


class MissionPage(ApiModel):
    api_schema = "MissionPage"
    items: list[Mission]
    next_cursor: str | None


class Iteration(ApiModel):
    api_schema = "IterationOut"
    n: int
    output: dict[str, Any] | None
    stdout: str
    stderr: str
    tool_calls: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal | None
    duration_ms: int
    verification: dict[str, Any] | None
    error_type: str | None


class AgentResult(ApiModel):
    """One attempt of a step, whole: output, streams, tool calls, spend, and each iteration."""

    api_schema = "AgentResultOut"
    id: uuid.UUID
    attempt: int
    agent: str
    success: bool
    model: str
    provider: str
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    tool_calls: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal | None
    duration_ms: int
    verification: dict[str, Any] | None
    iterations: list[Iteration] = []
    trace_id: str | None
    worker: str
    started_at: datetime
    created_at: datetime


class TimelineEvent(ApiModel):
    api_schema = "TimelineEventOut"
    id: int
    ts: datetime
    type: str
    step_key: str | None
    data: dict[str, Any]
    trace_id: str | None


class Workflow(ApiModel):
    api_schema = "WorkflowOut"
    id: uuid.UUID
    name: str
    version: int
    created_at: datetime
    definition: dict[str, Any]


class McpServerSpec(ApiModel):
    """A remote MCP server whose tools an agent may call (``mcp__<name>__<tool>``), as sent."""

    api_schema = "McpServerSpec-Input"
    name: str
    url: str
    tools: list[str] | None = None
    headers_secret: None = None  # the API refuses any value until it keeps secrets for servers


class McpServer(ApiModel):
    """The same, as the API answers it."""

    api_schema = "McpServerSpec-Output"
    name: str
    url: str
    tools: list[str] | None = None


class AgentSpec(ApiModel):
    """An agent's definition, as ``put_agent`` sends it."""

    api_schema = "AgentSpec"
    name: str | None = None  # when given, the name in the path
    description: str = ""
    model: str
    system_prompt: str = ""
    tools: list[str] = []
    approval_policy: str = "auto"
    output_schema: dict[str, Any] | None = None
    mcp_servers: Sequence[McpServerSpec] = ()
    enabled: bool = True


class Agent(AgentSpec):
    api_schema = "AgentOut"
    name: str
    mcp_servers: Sequence[McpServer] = ()  # type: ignore[assignment]  # the answer's schema, not the request's
    version: int
    created_at: datetime
    updated_at: datetime


class ControlAnswer(ApiModel):
    api_schema = "ControlAnswer"
    mission_id: uuid.UUID
    control_id: str
    action: str
    step_key: str | None
    applied: bool
    status: str


class DeadLetter(ApiModel):
    api_schema = "DeadLetterOut"
    id: uuid.UUID
    subject: str
    error: str
    error_type: str
    attempts: int
    mission_id: uuid.UUID | None
    step_id: uuid.UUID | None
    step_key: str | None
    payload: Any | None
    payload_base64: str | None
    headers: dict[str, Any]
    first_failed_at: datetime
    replayed_at: datetime | None
    replay_of: uuid.UUID | None


class DeadLetterPage(ApiModel):
    api_schema = "DeadLetterPage"
    items: list[DeadLetter]
    next_cursor: str | None


class ReplayAnswer(ApiModel):
    api_schema = "ReplayAnswer"
    dead_letter_id: uuid.UUID
    mission_id: uuid.UUID | None
    step_key: str | None
    attempt: int | None
    subject: str


class Fire(ApiModel):
    api_schema = "FireOut"
    fire_time: datetime
    kind: str
    outcome: str
    mission_id: uuid.UUID | None
    error: str | None


class Fires(ApiModel):
    api_schema = "FiresOut"
    schedule: str
    fires: list[Fire]


class Schedule(ApiModel):
    api_schema = "ScheduleOut"
    name: str
    workflow: str
    version: int | None
    cron: str | None
    interval_s: float | None
    timezone: str
    input: dict[str, Any]
    overlap: str
    catchup_window_s: float
    jitter_s: float
    paused: bool
    priority: int
    budget_usd: Decimal | None
    budget_tokens: int | None
    next_fire_times: list[datetime]
    buffered_fire_time: datetime | None
    recent_fires: list[Fire]
    caller: str
    created_at: datetime
    updated_at: datetime


class TriggerDelivery(ApiModel):
    api_schema = "TriggerDeliveryOut"
    delivery_id: str
    source: str
    event: str
    outcome: str
    mission_id: uuid.UUID | None
    error: str | None
    received_at: datetime


class Trigger(ApiModel):
    api_schema = "TriggerOut"
    name: str
    event: str
    workflow: str
    version: int | None
    input: dict[str, Any]
    filter: str | None
    has_secret: bool
    webhook_path: str
    priority: int
    budget_usd: Decimal | None
    budget_tokens: int | None
    caller: str
    created_at: datetime
    recent_deliveries: list[TriggerDelivery]


class Delivery(ApiModel):
    api_schema = "DeliveryOut"
    trigger: str
    outcome: str
    mission_id: uuid.UUID | None
    error: str | None


class EventAccepted(ApiModel):
    api_schema = "EventAccepted"
    id: str
    event: str
    missions: list[uuid.UUID]
    deliveries: list[Delivery]
    duplicate: bool
