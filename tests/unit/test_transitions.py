"""State machines of missions and steps: tables, illegal moves, timeline events, timestamps."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.db.models import Mission, Step, TimelineEventRow
from services.common.status import MISSION_TERMINAL, STEP_TERMINAL, MissionStatus, StepStatus
from services.orchestrator.engine.transitions import (
    MISSION_MOVES,
    STEP_MOVES,
    IllegalTransition,
    move_mission,
    move_step,
)

M, S = MissionStatus, StepStatus


class FakeUnit:
    """Stands in for UnitOfWork: collects timeline events."""

    def __init__(self, trace_id: str | None = None) -> None:
        self.trace_id = trace_id
        self.events: list[TimelineEventRow] = []
        self.observations: list[Any] = []

    def add_event(self, row: TimelineEventRow) -> None:
        self.events.append(row)

    def after_commit(self, observe: Any) -> None:
        self.observations.append(observe)


def new_step(status: StepStatus | str = S.PENDING, attempt: int = 0) -> Step:
    return Step(key="a", status=str(status), attempt=attempt, mission_id=uuid.uuid4())


def new_mission(status: MissionStatus | str = M.QUEUED) -> Mission:
    return Mission(id=uuid.uuid4(), status=str(status))


def uow() -> Any:
    return FakeUnit()


# --- tables -------------------------------------------------------------------------------


def test_every_status_has_an_entry() -> None:
    assert set(MISSION_MOVES) == set(MissionStatus)
    assert set(STEP_MOVES) == set(StepStatus)


def test_terminal_missions_move_only_by_replay() -> None:
    outgoing = {status: set(MISSION_MOVES[status]) for status in MISSION_TERMINAL}
    assert outgoing == {M.SUCCEEDED: set(), M.CANCELLED: set(), M.FAILED: {M.RUNNING}}


def test_terminal_steps_move_only_by_replay() -> None:
    outgoing = {status: set(STEP_MOVES[status]) for status in STEP_TERMINAL}
    assert outgoing == {S.SUCCEEDED: set(), S.SKIPPED: set(), S.CANCELLED: {S.PENDING}, S.FAILED: {S.DISPATCHED}}


def test_every_non_terminal_state_can_be_cancelled() -> None:
    for status in set(MissionStatus) - MISSION_TERMINAL:
        assert M.CANCELLED in MISSION_MOVES[status], status
    for status in set(StepStatus) - STEP_TERMINAL:
        assert S.CANCELLED in STEP_MOVES[status], status


def test_no_status_moves_to_itself() -> None:
    for mission_status, targets in MISSION_MOVES.items():
        assert mission_status not in targets
    for step_status, targets in STEP_MOVES.items():
        assert step_status not in targets


# --- steps --------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(StepStatus, StepStatus)))
def test_step_move_follows_the_table(current: StepStatus, target: StepStatus) -> None:
    unit, step = FakeUnit(), new_step(current)
    if target in STEP_MOVES[current]:
        move_step(unit, step, target)
        assert step.status == target
        assert [e.type for e in unit.events] == [f"step.{target}"]
    else:
        with pytest.raises(IllegalTransition) as info:
            move_step(unit, step, target)
        assert (info.value.current, info.value.target) == (current, target)
        assert step.status == current
        assert unit.events == []


def test_illegal_step_move_names_both_states() -> None:
    with pytest.raises(IllegalTransition, match="step 'a' cannot go from 'succeeded' to 'running'"):
        move_step(uow(), new_step(S.SUCCEEDED), S.RUNNING)


def test_step_event_records_mission_key_attempt_and_data() -> None:
    unit = FakeUnit(trace_id="0af7651916cd43dd8448eb211c80319c")
    step = new_step(S.READY, attempt=2)
    move_step(unit, step, S.DISPATCHED, worker="w1", skipped_reason=None)
    (event,) = unit.events
    assert event.mission_id == step.mission_id
    assert event.type == "step.dispatched"
    assert event.step_key == "a"
    assert event.data == {"attempt": 2, "worker": "w1"}  # None values dropped
    assert event.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert event.ts is not None
    assert event.ts.tzinfo is not None


def test_step_event_type_can_be_overridden() -> None:
    unit = FakeUnit()
    move_step(unit, new_step(S.PENDING), S.SKIPPED, event="step.skipped_by_condition")
    assert [e.type for e in unit.events] == ["step.skipped_by_condition"]


def test_dispatch_sets_dispatched_at_and_clears_previous_attempt_times() -> None:
    step = new_step(S.RETRY_WAIT, attempt=1)
    step.started_at = datetime(2020, 1, 1, tzinfo=UTC)
    step.finished_at = datetime(2020, 1, 1, tzinfo=UTC)
    before = datetime.now(UTC)
    move_step(uow(), step, S.DISPATCHED)
    assert step.dispatched_at is not None
    assert step.dispatched_at >= before
    assert step.started_at is None
    assert step.finished_at is None


def test_running_sets_started_at() -> None:
    step = new_step(S.DISPATCHED, attempt=1)
    move_step(uow(), step, S.RUNNING)
    assert step.started_at is not None
    assert step.finished_at is None


@pytest.mark.parametrize("target", [S.SUCCEEDED, S.FAILED, S.CANCELLED, S.RETRY_WAIT])
def test_finishing_an_attempt_sets_finished_at(target: StepStatus) -> None:
    step = new_step(S.RUNNING, attempt=1)
    before = datetime.now(UTC)
    move_step(uow(), step, target)
    assert step.finished_at is not None
    assert step.finished_at >= before


def test_skipping_a_pending_step_sets_finished_at() -> None:
    step = new_step(S.PENDING)
    move_step(uow(), step, S.SKIPPED)
    assert step.finished_at is not None


def test_replaying_a_failed_step_dispatches_it_again() -> None:
    step = new_step(S.RUNNING, attempt=3)
    unit = FakeUnit()
    move_step(unit, step, S.FAILED)
    assert step.finished_at is not None
    move_step(unit, step, S.DISPATCHED)
    assert step.status == S.DISPATCHED
    assert step.finished_at is None
    assert [e.type for e in unit.events] == ["step.failed", "step.dispatched"]


def test_illegal_step_move_changes_no_timestamp() -> None:
    step = new_step(S.PENDING)
    with pytest.raises(IllegalTransition):
        move_step(uow(), step, S.SUCCEEDED)
    assert (step.dispatched_at, step.started_at, step.finished_at) == (None, None, None)


# --- missions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), list(itertools.product(MissionStatus, MissionStatus)))
def test_mission_move_follows_the_table(current: MissionStatus, target: MissionStatus) -> None:
    unit, mission = FakeUnit(), new_mission(current)
    if target in MISSION_MOVES[current]:
        move_mission(unit, mission, target)
        assert mission.status == target
        (event,) = unit.events
        assert event.type == f"mission.{target}"
        assert event.mission_id == mission.id
        assert event.step_key is None
        assert event.data == {"previous": str(current)}
    else:
        with pytest.raises(IllegalTransition) as info:
            move_mission(unit, mission, target)
        assert (info.value.current, info.value.target) == (current, target)
        assert mission.status == current
        assert unit.events == []


def test_illegal_mission_move_names_the_mission() -> None:
    mission = new_mission(M.CANCELLED)
    with pytest.raises(IllegalTransition, match=f"mission {mission.id} cannot go from 'cancelled' to 'running'"):
        move_mission(uow(), mission, M.RUNNING)


def test_mission_start_sets_started_at_once() -> None:
    mission = new_mission(M.QUEUED)
    unit = FakeUnit()
    move_mission(unit, mission, M.RUNNING)
    started = mission.started_at
    assert started is not None
    assert mission.finished_at is None
    move_mission(unit, mission, M.PAUSED, reason="manual")
    move_mission(unit, mission, M.RUNNING)
    assert mission.started_at == started
    assert unit.events[1].data == {"previous": "running", "reason": "manual"}


def test_leaving_pause_clears_the_pause_reason() -> None:
    mission = new_mission(M.PAUSED)
    mission.pause_reason = "budget_exceeded"
    move_mission(uow(), mission, M.RUNNING)
    assert mission.pause_reason is None


def test_pausing_keeps_the_pause_reason() -> None:
    mission = new_mission(M.RUNNING)
    mission.pause_reason = "backpressure"
    move_mission(uow(), mission, M.PAUSED)
    assert mission.pause_reason == "backpressure"


@pytest.mark.parametrize("target", [M.SUCCEEDED, M.FAILED, M.CANCELLED])
def test_terminal_mission_sets_finished_at(target: MissionStatus) -> None:
    mission = new_mission(M.RUNNING)
    move_mission(uow(), mission, target)
    assert mission.finished_at is not None
    assert mission.finished_at.tzinfo is not None


def test_replayed_mission_clears_finished_at() -> None:
    mission = new_mission(M.RUNNING)
    move_mission(uow(), mission, M.FAILED)
    assert mission.finished_at is not None
    move_mission(uow(), mission, M.RUNNING)
    assert mission.status == M.RUNNING
    assert mission.finished_at is None


def test_mission_event_carries_the_trace_id() -> None:
    unit = FakeUnit(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    move_mission(unit, new_mission(M.QUEUED), M.CANCELLED, event="mission.cancelled_by_user", actor="ops")
    (event,) = unit.events
    assert event.type == "mission.cancelled_by_user"
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.data == {"previous": "queued", "actor": "ops"}
