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


class TriggerType(StrEnum):
    """What started a mission (``missions.trigger.type``)."""

    API = "api"
    SCHEDULE = "schedule"
    EVENT = "event"
    WEBHOOK = "webhook"


class Overlap(StrEnum):
    """What a schedule does at a fire time while its previous mission still runs (Temporal's policies)."""

    SKIP = "skip"  # record the fire time as skipped
    BUFFER_ONE = "buffer_one"  # start it when the running one ends; one at most waits, later ones are skipped
    ALLOW_ALL = "allow_all"  # start it anyway
    CANCEL_OTHER = "cancel_other"  # cancel the running one, then start it


class FireOutcome(StrEnum):
    """What became of one fire time of a schedule (``schedule_fires.outcome``)."""

    STARTED = "started"
    SKIPPED = "skipped"
    BUFFERED = "buffered"
    MISSED = "missed"
    FAILED = "failed"


class FireKind(StrEnum):
    """How a fire time came about (``schedule_fires.kind``)."""

    SCHEDULED = "scheduled"  # on time, or late within the catch-up window
    BACKFILL = "backfill"
    MANUAL = "manual"  # POST /v1/schedules/{name}/trigger


class DeliveryOutcome(StrEnum):
    """What became of one event or webhook delivery to a trigger (``trigger_deliveries.outcome``)."""

    STARTED = "started"
    DUPLICATE = "duplicate"  # not stored: a redelivery answered with the first one's mission
    IGNORED = "ignored"
    BAD_SIGNATURE = "bad_signature"  # not stored: nothing is written for an unauthenticated request
    FAILED = "failed"
