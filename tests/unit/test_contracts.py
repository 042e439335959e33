"""Wire messages: frozen, strict, versioned, and stable through bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from services.common.contracts import (
    SCHEMA_VERSION,
    Contract,
    Control,
    ControlAction,
    ResultMessage,
    SandboxExecRequest,
    SandboxExecResult,
    StepError,
    StepStarted,
    TimelineEvent,
    WorkItem,
    WorkResult,
)
from services.common.errors import ErrorType

MISSION = uuid.UUID("11111111-1111-4111-8111-111111111111")
STEP = uuid.UUID("22222222-2222-4222-8222-222222222222")
RESULT = uuid.UUID("33333333-3333-4333-8333-333333333333")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

results = TypeAdapter(ResultMessage)


def work_item(**changes: object) -> WorkItem:
    fields: dict[str, object] = {
        "mission_id": MISSION,
        "step_id": STEP,
        "step_key": "scan",
        "attempt": 2,
        "agent": "coder",
        "input": {"repo": "acme/api", "n": [1, 2, {"x": None}]},
        "timeout_s": 60,
        "workflow": "review",
        "checks": [{"name": "tests", "argv": ["pytest"]}],
    }
    fields.update(changes)
    return WorkItem.model_validate(fields)


def step_started() -> StepStarted:
    return StepStarted(mission_id=MISSION, step_id=STEP, attempt=2, worker="w-1", started_at=WHEN)


def work_result() -> WorkResult:
    return WorkResult(
        mission_id=MISSION,
        step_id=STEP,
        attempt=2,
        result_id=RESULT,
        success=False,
        output={"summary": {"total": 3}},
        error=StepError(type=ErrorType.LLM_RATE_LIMITED, message="slow down", retry_after_s=2.5),
        model="claude-sonnet",
        tokens_in=1200,
        tokens_out=300,
        cache_read_tokens=50,
        cost_usd=Decimal("0.012345"),
        duration_ms=4321,
    )


def every_message() -> list[Contract]:
    return [
        work_item(),
        step_started(),
        work_result(),
        Control(mission_id=MISSION, action=ControlAction.RESUME, add_budget_usd=Decimal("5.5"), actor="ops"),
        TimelineEvent(id=7, mission_id=MISSION, ts=WHEN, type="step.succeeded", step_key="scan", data={"a": 1}),
        SandboxExecRequest(argv=["pytest", "-q"], env={"A": "b"}, stdin="x"),
        SandboxExecResult(run_id=None, status="timeout", stdout="partial", stdout_truncated=True),
    ]


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_bytes(message: Contract) -> None:
    data = message.to_bytes()
    assert isinstance(data, bytes)
    again = type(message).model_validate_json(data)
    assert again == message
    assert again.to_bytes() == data


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_messages_carry_schema_version_one(message: Contract) -> None:
    assert SCHEMA_VERSION == 1
    assert message.schema_version == 1
    assert orjson.loads(message.to_bytes())["schema_version"] == 1


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_messages_are_frozen(message: Contract) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        message.schema_version = 1  # type: ignore[misc]


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_messages_reject_extra_fields(message: Contract) -> None:
    payload = orjson.loads(message.to_bytes())
    payload["surprise"] = True
    with pytest.raises(ValidationError, match="surprise"):
        type(message).model_validate(payload)


def test_another_schema_version_is_rejected() -> None:
    payload = orjson.loads(work_item().to_bytes())
    payload["schema_version"] = 2
    with pytest.raises(ValidationError, match="schema_version"):
        WorkItem.model_validate(payload)


def test_missing_schema_version_defaults_to_one() -> None:
    payload = orjson.loads(work_item().to_bytes())
    del payload["schema_version"]
    assert WorkItem.model_validate(payload).schema_version == 1


def test_step_error_is_frozen_and_strict() -> None:
    error = StepError(type=ErrorType.TIMEOUT, message="late")
    with pytest.raises(ValidationError):
        error.message = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        StepError.model_validate({"type": "TIMEOUT", "message": "late", "extra": 1})
    with pytest.raises(ValidationError):
        StepError.model_validate({"type": "NOT_A_TYPE", "message": "late"})


def test_work_result_keeps_decimal_cost_exactly() -> None:
    again = WorkResult.model_validate_json(work_result().to_bytes())
    assert again.cost_usd == Decimal("0.012345")
    assert again.error is not None
    assert again.error.type is ErrorType.LLM_RATE_LIMITED
    assert again.error.retry_after_s == 2.5


def test_result_union_picks_step_started_by_kind() -> None:
    message = results.validate_json(step_started().to_bytes())
    assert isinstance(message, StepStarted)
    assert message == step_started()


def test_result_union_picks_work_result_by_kind() -> None:
    message = results.validate_json(work_result().to_bytes())
    assert isinstance(message, WorkResult)
    assert message == work_result()


def test_result_union_rejects_other_kinds() -> None:
    with pytest.raises(ValidationError):
        results.validate_json(work_item().to_bytes())
    payload = orjson.loads(step_started().to_bytes())
    del payload["kind"]
    with pytest.raises(ValidationError):
        results.validate_python(payload)


def test_result_union_does_not_guess_from_fields() -> None:
    payload = orjson.loads(step_started().to_bytes())
    payload["kind"] = "work_result"
    with pytest.raises(ValidationError):
        results.validate_python(payload)


def test_work_item_msg_id_is_step_and_attempt() -> None:
    assert work_item().msg_id == f"{STEP}:2"
    assert work_item(attempt=3).msg_id == "22222222-2222-4222-8222-222222222222:3"


def test_work_result_msg_id_differs_from_the_work_item() -> None:
    assert work_result().msg_id == f"{STEP}:2:result"
    assert work_result().msg_id != work_item().msg_id


def test_work_item_attempt_starts_at_one() -> None:
    with pytest.raises(ValidationError, match="attempt"):
        work_item(attempt=0)


def test_work_item_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="timeout_s"):
        work_item(timeout_s=0)


def test_sandbox_request_needs_a_command() -> None:
    with pytest.raises(ValidationError, match="argv"):
        SandboxExecRequest(argv=[])


def test_sandbox_result_status_is_one_of_the_known_values() -> None:
    with pytest.raises(ValidationError, match="status"):
        SandboxExecResult.model_validate({"run_id": None, "status": "exploded"})


def test_control_action_must_be_known() -> None:
    with pytest.raises(ValidationError, match="action"):
        Control.model_validate({"mission_id": str(MISSION), "action": "explode"})
