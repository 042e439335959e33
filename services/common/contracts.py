"""Wire messages between COO's services. Every message is frozen, strict and versioned."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import ErrorType

SCHEMA_VERSION: Literal[1] = 1

JsonDict = dict[str, Any]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class StepError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ErrorType
    message: str
    detail: str | None = None
    retry_after_s: float | None = None


class WorkItem(Contract):
    """One attempt of one step, sent on ``coo.work.<agent>``."""

    kind: Literal["work_item"] = "work_item"
    mission_id: uuid.UUID
    step_id: uuid.UUID
    step_key: str
    attempt: int = Field(ge=1)
    agent: str
    input: JsonDict
    timeout_s: float = Field(gt=0)
    workflow: str
    checks: list[JsonDict] = Field(default_factory=list)

    @property
    def msg_id(self) -> str:
        return f"{self.step_id}:{self.attempt}"


class StepStarted(Contract):
    """A worker began an attempt (sent on ``coo.results``)."""

    kind: Literal["step_started"] = "step_started"
    mission_id: uuid.UUID
    step_id: uuid.UUID
    attempt: int
    worker: str
    started_at: datetime


class WorkResult(Contract):
    """The outcome of one attempt (sent on ``coo.results``); the full record is in ``agent_results``."""

    kind: Literal["work_result"] = "work_result"
    mission_id: uuid.UUID
    step_id: uuid.UUID
    attempt: int
    result_id: uuid.UUID | None
    success: bool
    output: JsonDict | None = None
    error: StepError | None = None
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: Decimal | None = Decimal(0)
    duration_ms: int = 0

    @property
    def msg_id(self) -> str:
        return f"{self.step_id}:{self.attempt}:result"


ResultMessage = Annotated[StepStarted | WorkResult, Field(discriminator="kind")]


class ControlAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"


class Control(Contract):
    """An operator's command for one mission, sent on ``coo.control.<mission>``."""

    kind: Literal["control"] = "control"
    mission_id: uuid.UUID
    action: ControlAction
    step_key: str | None = None
    reason: str | None = None
    actor: str | None = None
    add_budget_usd: Decimal | None = None
    add_budget_tokens: int | None = None


class TimelineEvent(Contract):
    """A timeline row, fanned out on ``coo.timeline.<mission>`` after commit."""

    kind: Literal["timeline_event"] = "timeline_event"
    id: int
    mission_id: uuid.UUID
    ts: datetime
    type: str
    step_key: str | None = None
    data: JsonDict = Field(default_factory=dict)
    trace_id: str | None = None


class SandboxExecRequest(Contract):
    """One tool command, request/reply on ``coo.sandbox.exec`` (queue group ``sandbox``)."""

    kind: Literal["sandbox_exec"] = "sandbox_exec"
    mission_id: uuid.UUID | None = None
    step_id: uuid.UUID | None = None
    attempt: int = 1
    argv: list[str] = Field(min_length=1)
    shell: bool = False
    cwd: str = "."
    env: dict[str, str] = Field(default_factory=dict)
    stdin: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    network: bool = False
    workspace_source: str | None = None


class SandboxExecResult(Contract):
    kind: Literal["sandbox_result"] = "sandbox_result"
    run_id: uuid.UUID | None
    status: Literal["succeeded", "failed", "timeout", "error"]
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int = 0
    isolation: list[str] = Field(
        default_factory=list, description="What isolation was applied, and where it is weaker than asked."
    )
    error: StepError | None = None
