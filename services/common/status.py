"""The statuses every service speaks of: missions and steps (their moves are in the engine's
``transitions.py``, the only place that changes them), sandbox runs and approvals. Columns holding
them are constrained to these values in the database."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class MissionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    AWAITING_APPROVAL = "awaiting_approval"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    """A sandbox run (``sandbox_runs.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"
    CANCELLED = "cancelled"


class ToolCallStatus(StrEnum):
    """One tool call an agent made (``ToolCall.status``)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


class ApprovalStatus(StrEnum):
    """A step's approval (``approvals.status``)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


# What a finished sandbox command or check can report (a run row may also be running or cancelled).
ResultStatus = Literal[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.ERROR]

MISSION_TERMINAL = frozenset({MissionStatus.SUCCEEDED, MissionStatus.FAILED, MissionStatus.CANCELLED})
STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})
