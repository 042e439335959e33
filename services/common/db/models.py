"""Tables of DESIGN §4 (SQLAlchemy 2 declarative)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.status import (
    ApprovalStatus,
    DeliveryOutcome,
    FireKind,
    FireOutcome,
    MissionStatus,
    Overlap,
    RunStatus,
    StepStatus,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = dict[str, Any]
Usd = Numeric(18, 8)


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


def _status_in(values: Iterable[str], column: str = "status") -> CheckConstraint:
    """``column`` holds only ``values`` (named ``ck_<table>_<column>``; migrations 0004 and 0005 create them)."""
    listed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {Json: JSONB, list[Any]: JSONB, datetime: DateTime(timezone=True)}


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    tools: Mapped[list[Any]] = mapped_column(default=list)
    approval_policy: Mapped[str] = mapped_column(String(32), default="auto")
    output_schema: Mapped[Json | None] = mapped_column(default=None)
    mcp_servers: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[Json]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Mission(Base):
    __tablename__ = "missions"
    __table_args__ = (
        UniqueConstraint("caller", "idempotency_key"),
        Index("ix_missions_queue", "status", "priority", "created_at"),
        Index("ix_missions_created_at_id", "created_at", "id"),
        Index(
            "ix_missions_trigger_created_at",
            text("(trigger ->> 'type')"),
            text("(trigger ->> 'name')"),
            "created_at",
        ),
        _status_in(MissionStatus),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id"))
    workflow_name: Mapped[str] = mapped_column(String(100))
    workflow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="queued")
    pause_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[Json] = mapped_column(default=dict)
    output: Mapped[Json | None] = mapped_column(default=None)
    error: Mapped[Json | None] = mapped_column(default=None)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_usd: Mapped[Decimal | None] = mapped_column(Usd, default=None)
    spent_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    spent_usd: Mapped[Decimal] = mapped_column(Usd, default=Decimal(0))
    caller: Mapped[str] = mapped_column(String(100), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    traceparent: Mapped[str | None] = mapped_column(String(100), default=None)
    # Why it started: {"type": "api"|"schedule"|"event"|"webhook", "name"?, "fire_time"?, "event_id"?}
    trigger: Mapped[Json] = mapped_column(default=lambda: {"type": "api"}, server_default='{"type": "api"}')
    # The mission this one runs again (same workflow version, input, priority and budgets), if any.
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("missions.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("mission_id", "key"),
        Index("ix_steps_status_next_attempt_at", "status", "next_attempt_at"),
        _status_in(StepStatus),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    mission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("missions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    agent: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    depends_on: Mapped[list[Any]] = mapped_column(default=list)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout_s: Mapped[float] = mapped_column(default=600.0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    input: Mapped[Json | None] = mapped_column(default=None)
    output: Mapped[Json | None] = mapped_column(default=None)
    error: Mapped[Json | None] = mapped_column(default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class AgentResult(Base):
    __tablename__ = "agent_results"
    __table_args__ = (UniqueConstraint("step_id", "attempt"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    mission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("missions.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(100))
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    tool_calls: Mapped[list[Any]] = mapped_column(default=list)
    output: Mapped[Json | None] = mapped_column(default=None)
    error: Mapped[Json | None] = mapped_column(default=None)
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal | None] = mapped_column(Usd, default=Decimal(0))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(50))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    success: Mapped[bool] = mapped_column(Boolean)
    verification: Mapped[Json | None] = mapped_column(default=None)
    # Each iteration's record when the agent ran more than once (None: one run, the columns above).
    iterations: Mapped[list[Any] | None] = mapped_column(JSONB(none_as_null=True), default=None)
    events: Mapped[list[Any] | None] = mapped_column(JSONB(none_as_null=True), default=None)  # AttemptEvents
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)
    worker: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class SandboxRun(Base):
    __tablename__ = "sandbox_runs"
    __table_args__ = (
        Index("ix_sandbox_runs_status_heartbeat_at", "status", "heartbeat_at"),
        _status_in(RunStatus),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    mission_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    step_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    argv: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(32), default="running")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    instance_id: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("step_id", "attempt"), _status_in(ApprovalStatus))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    mission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("missions.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(200), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    notified_at: Mapped[datetime | None] = mapped_column(default=None)


class TimelineEventRow(Base):
    __tablename__ = "timeline_events"
    __table_args__ = (Index("ix_timeline_events_mission_id_id", "mission_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    mission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("missions.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(server_default=func.now())
    type: Mapped[str] = mapped_column(String(64))
    step_key: Mapped[str | None] = mapped_column(String(100), default=None)
    data: Mapped[Json] = mapped_column(default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    subject: Mapped[str] = mapped_column(String(300))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[Json] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    mission_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)
    step_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    first_failed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(default=None)
    replay_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dead_letters.id"), default=None)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("fingerprint", "status", "starts_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    labels: Mapped[Json] = mapped_column(default=dict)
    annotations: Mapped[Json] = mapped_column(default=dict)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    notified_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)  # one of admin | operator | viewer
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)  # to the minute


class AuditEvent(Base):
    """One mutating call (REST or console), allowed or refused: who, what, on what, and the answer."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    key_name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(300), default=None)
    outcome: Mapped[int] = mapped_column(Integer)


class RateLimitWindow(Base):
    """Requests per API key per minute window, shared by every orchestrator replica."""

    __tablename__ = "rate_limit_windows"

    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Schedule(Base):
    """Starts missions of a workflow at fire times: a cron expression in a timezone, or an interval."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("(cron IS NULL) <> (interval_s IS NULL)", name="cron_or_interval"),
        Index("ix_schedules_due", "next_due_at", postgresql_where=text("NOT paused")),
        _status_in(Overlap, "overlap"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    workflow: Mapped[str] = mapped_column(String(100))
    workflow_version: Mapped[int | None] = mapped_column(Integer, default=None)  # None: the latest at each fire
    cron: Mapped[str | None] = mapped_column(String(200), default=None)
    interval_s: Mapped[float | None] = mapped_column(default=None)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input: Mapped[Json] = mapped_column(default=dict)
    overlap: Mapped[str] = mapped_column(String(16), default=Overlap.SKIP)
    catchup_window_s: Mapped[float] = mapped_column(default=3600.0)
    jitter_s: Mapped[float] = mapped_column(default=0.0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    budget_usd: Mapped[Decimal | None] = mapped_column(Usd, default=None)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    next_fire_at: Mapped[datetime]  # the first fire time not handled yet
    next_due_at: Mapped[datetime]  # next_fire_at plus its jitter: when the engine handles it
    buffered_fire_at: Mapped[datetime | None] = mapped_column(default=None)  # buffer_one: waits for the running one
    last_mission_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    caller: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ScheduleFire(Base):
    """One fire time of a schedule and what became of it; the unique key makes it happen once."""

    __tablename__ = "schedule_fires"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        _status_in(FireOutcome, "outcome"),
        _status_in(FireKind, "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    mission_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Trigger(Base):
    """Starts a mission of a workflow for each matching event (``POST /v1/events``) or signed webhook."""

    __tablename__ = "triggers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    event: Mapped[str] = mapped_column(String(200), index=True)
    workflow: Mapped[str] = mapped_column(String(100))
    workflow_version: Mapped[int | None] = mapped_column(Integer, default=None)
    input: Mapped[Json] = mapped_column(default=dict)  # templates over {{ event.* }}
    filter: Mapped[str | None] = mapped_column(Text, default=None)
    secret: Mapped[str | None] = mapped_column(String(500), default=None)  # the webhook's HMAC key; never read out
    priority: Mapped[int] = mapped_column(Integer, default=0)
    budget_usd: Mapped[Decimal | None] = mapped_column(Usd, default=None)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    caller: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TriggerDelivery(Base):
    """One event or webhook delivery to a trigger and its outcome; a redelivery finds it by its id."""

    __tablename__ = "trigger_deliveries"
    __table_args__ = (
        UniqueConstraint("trigger_id", "delivery_id"),
        Index("ix_trigger_deliveries_trigger_id_received_at", "trigger_id", "received_at"),
        _status_in(DeliveryOutcome, "outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    trigger_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # event | webhook
    event: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    mission_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class EventRecord(Base):
    """An event posted to ``/v1/events``, kept so that the same id again starts nothing new."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    event: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the event and payload: same id, other event → 409
    missions: Mapped[list[Any]] = mapped_column(default=list)
    caller: Mapped[str] = mapped_column(String(100), default="")
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
