"""Wire messages between COO's services. Every message is frozen, strict and versioned."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.egress import parse_pattern
from services.common.errors import ErrorType
from services.common.status import ResultStatus, RunStatus

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
    retryable: bool | None = Field(
        default=None, description="Overrides the type's own retry policy (a GitHub 4xx is not retried, a 5xx is)"
    )

    @property
    def retried(self) -> bool:
        """Whether an attempt that failed with this error is tried again (attempts left permitting)."""
        return self.type.retryable if self.retryable is None else self.retryable


class AttemptEvent(BaseModel):
    """Something that happened inside an attempt, recorded on the mission's timeline with its result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["step.iteration", "github.failed"]
    at: datetime
    data: JsonDict = Field(default_factory=dict)


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
    max_iterations: int = Field(default=1, ge=1, le=20, description="Agent runs per attempt while checks fail.")
    egress: list[str] = Field(default_factory=list, description="host:port patterns its commands may reach.")

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
    worker: str | None = None  # who ran it, and when it started: a quick attempt sends no StepStarted
    started_at: datetime | None = None
    events: list[AttemptEvent] = Field(default_factory=list, max_length=1000)

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
    network: bool = Field(
        default=False, description="Egress to everything the sandbox allows (COO_SANDBOX_EGRESS_ALLOW)."
    )
    egress: list[str] = Field(
        default_factory=list, max_length=100, description="host:port patterns this command may reach."
    )
    workspace_source: str | None = Field(
        default=None, description="Directory copied (or git repository cloned) into a new attempt workspace."
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_sandbox_env(env)

    @field_validator("egress")
    @classmethod
    def _check_egress(cls, egress: list[str]) -> list[str]:
        return check_egress(egress)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = ("COO_", "ANTHROPIC_", "OTEL_")


def check_egress(entries: list[str]) -> list[str]:
    """Egress allow-list entries, each a valid ``host:port`` pattern."""
    for entry in entries:
        parse_pattern(entry)
    return entries


def check_sandbox_env(env: dict[str, str]) -> dict[str, str]:
    """Variables a command may be given: plain names, none of the services' own settings."""
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"env name {name!r} is not a valid variable name")
        if name.upper().startswith(_RESERVED_ENV):
            raise ValueError(f"env name {name!r} is reserved for COO's own settings")
        if "\x00" in value:
            raise ValueError(f"env {name!r} holds a NUL character")
    return env


class SandboxExecResult(Contract):
    kind: Literal["sandbox_result"] = "sandbox_result"
    run_id: uuid.UUID | None
    status: ResultStatus
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
    stopped_by: Literal["timeout", "workspace_cap", "file_size", "cpu"] | None = Field(
        default=None, description="The limit that stopped the command, if one did."
    )


class CheckKind(StrEnum):
    """What a check verifies: a failing one fails its attempt with the matching error type."""

    TEST = "test"
    LINT = "lint"
    TYPECHECK = "typecheck"
    BUILD = "build"
    CUSTOM = "custom"

    @property
    def error_type(self) -> ErrorType:
        return _CHECK_ERRORS[self]


_CHECK_ERRORS = {
    CheckKind.TEST: ErrorType.TEST_FAILED,
    CheckKind.LINT: ErrorType.LINT_FAILED,
    CheckKind.TYPECHECK: ErrorType.TYPECHECK_FAILED,
    CheckKind.BUILD: ErrorType.BUILD_FAILED,
    CheckKind.CUSTOM: ErrorType.VERIFICATION_FAILED,
}


class VerificationCheck(BaseModel):
    """A command that must exit 0 (the workflow's step ``checks``: tests, lint, a file that must exist)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    kind: CheckKind = CheckKind.CUSTOM


class SandboxCancel(Contract):
    """A worker gave up an attempt while the sandbox ran its commands (it is shutting down and handed
    the attempt back to the queue): every sandbox replica stops that attempt's commands and keeps its
    workspace for whoever runs the attempt next. Core publish on ``coo.sandbox.cancel`` (no queue
    group, no reply)."""

    kind: Literal["sandbox_cancel"] = "sandbox_cancel"
    step_id: uuid.UUID
    attempt: int = Field(ge=1)


class SandboxVerifyRequest(Contract):
    """Run a step attempt's checks in its workspace (request/reply on ``coo.sandbox.exec``)."""

    kind: Literal["sandbox_verify"] = "sandbox_verify"
    mission_id: uuid.UUID | None = None
    step_id: uuid.UUID
    attempt: int = Field(default=1, ge=1)
    checks: list[VerificationCheck] = Field(min_length=1, max_length=50)
    env: dict[str, str] = Field(default_factory=dict)
    network: bool = False
    egress: list[str] = Field(default_factory=list, max_length=100)
    workspace_source: str | None = None
    cleanup: bool = Field(default=True, description="Delete the attempt's workspace once the checks ran.")
    keep_on_failure: bool = Field(
        default=False, description="Keep the workspace when a check failed (the agent iterates on it)."
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_sandbox_env(env)

    @field_validator("egress")
    @classmethod
    def _check_egress(cls, egress: list[str]) -> list[str]:
        return check_egress(egress)

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[VerificationCheck]) -> list[VerificationCheck]:
        names = [c.name for c in checks]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"check name {duplicate!r} is used twice")
        return checks


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: CheckKind = CheckKind.CUSTOM
    passed: bool
    exit_code: int | None
    duration_ms: int
    output_tail: str = Field(description="The end of the check's stdout then stderr.")
    status: ResultStatus
    run_id: uuid.UUID | None = None


class VerificationReport(Contract):
    """The outcome of a ``SandboxVerifyRequest``: passed only if every check passed."""

    kind: Literal["sandbox_verification"] = "sandbox_verification"
    passed: bool
    checks: list[CheckResult] = Field(default_factory=list)
    duration_ms: int = 0
    error: StepError | None = None
    isolation: list[str] = Field(
        default_factory=list, description="What isolation the checks ran under, and where it is weaker than asked."
    )

    def failure(self) -> StepError | None:
        """``VERIFICATION_FAILED`` naming the checks that failed, or ``None`` when all passed."""
        if self.passed:
            return None
        if self.error is not None:
            return self.error
        failed = [c for c in self.checks if not c.passed]
        parts = [
            f"{c.name} ({'timed out' if c.status == RunStatus.TIMEOUT else f'exit {c.exit_code}'})" for c in failed
        ]
        # The first failing check's kind names the failure (TEST_FAILED for a failing test check).
        return StepError(type=failed[0].kind.error_type, message="checks failed: " + ", ".join(parts))
