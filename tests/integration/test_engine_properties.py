"""Property test of the state machine and the DAG scheduler, on random DAGs with random `when`
conditions and random attempt outcomes, against the real engine code, Postgres and NATS.

The mission is started as a user's request, a schedule's fire time or an event delivered to a
trigger (delivered twice: the second starts nothing). The test then plays the workers: it picks any
in-flight step, in any order, and reports success, a retryable failure or a fatal one. Whatever it
does, every reachable step runs after its dependencies, succeeds at most once, and the mission
ends in a final state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select, update

from services.common.contracts import StepError, WorkResult
from services.common.db.models import Mission, Schedule, Step, TimelineEventRow, Trigger, Workflow
from services.common.errors import ErrorType
from services.common.settings import Settings
from services.common.status import DeliveryOutcome, FireKind, FireOutcome, TriggerType
from services.orchestrator.engine.dag import WorkflowDefinition, parse_definition
from services.orchestrator.engine.deliveries import deliver
from services.orchestrator.engine.missions import create_mission
from services.orchestrator.engine.results import apply_result
from services.orchestrator.engine.scheduler import advance, lock_mission
from services.orchestrator.engine.schedules import fire, set_next_fire
from services.orchestrator.engine.unit import UnitOfWork

WHEN = [None, None, None, "{{ input.go }}", "{{ not input.go }}"]


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=7))
    steps: list[dict[str, Any]] = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 3))) if i else []
        step: dict[str, Any] = {
            "id": f"s{i}",
            "agent": "echo",
            "depends_on": [f"s{d}" for d in sorted(deps)],
            "input": {"i": i},
            "retry": {"max_attempts": 2, "base": 0.001, "max": 0.001},
        }
        when = draw(st.sampled_from(WHEN))
        if when:
            step["when"] = when
        steps.append(step)
    return {"name": f"p{uuid.uuid4().hex[:12]}", "steps": steps}


def expected_when_all_succeed(definition: dict[str, Any], go: bool) -> dict[str, str]:
    """The engine's skip rule, written independently: a step is skipped when its `when` is false,
    or when it has dependencies and all of them were skipped; otherwise it succeeds."""
    status: dict[str, str] = {}
    for step in definition["steps"]:
        deps = step["depends_on"]
        condition = {"{{ input.go }}": go, "{{ not input.go }}": not go}.get(step.get("when", ""), True)
        skipped = (deps and all(status[d] == "skipped" for d in deps)) or not condition
        status[step["id"]] = "skipped" if skipped else "succeeded"
    return status


@hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(definition=dags(), go=st.booleans(), start=st.sampled_from(["api", "schedule", "event"]), data=st.data())
async def test_any_dag_under_any_outcomes_runs_each_reachable_step_once_after_its_dependencies(
    engine_parts: Any, definition: dict[str, Any], go: bool, start: str, data: st.DataObject
) -> None:
    settings, sessionmaker, bus = engine_parts
    parsed = parse_definition(definition, known_agents={"echo"})

    def unit() -> UnitOfWork:
        return UnitOfWork(sessionmaker, bus)

    async with unit() as uow:
        workflow = Workflow(name=parsed.name, version=1, definition=parsed.model_dump(mode="json", by_alias=True))
        uow.session.add(workflow)
        await uow.session.flush()
        mission_id = await _start(uow, settings, workflow, parsed, go, start)
    if start == "event":  # the same event again: answered with the same mission, nothing new
        async with unit() as uow:
            trigger = (await uow.session.execute(select(Trigger).where(Trigger.name == parsed.name))).scalar_one()
            again = await deliver(uow, settings, None, trigger, TriggerType.EVENT, "e-1", "go", {"go": go})
        assert again.outcome is DeliveryOutcome.DUPLICATE and again.mission_id == mission_id
    async with sessionmaker() as session:
        started = list(
            (await session.execute(select(Mission.id).where(Mission.workflow_name == parsed.name))).scalars()
        )
    assert started == [mission_id]

    all_ok = True
    for _ in range(200):
        async with sessionmaker() as session:
            steps = list((await session.execute(select(Step).where(Step.mission_id == mission_id))).scalars())
            status = await session.scalar(select(Mission.status).where(Mission.id == mission_id))
        if status in ("succeeded", "failed", "cancelled"):
            break
        waiting = [s for s in steps if s.status == "retry_wait"]
        if waiting:  # the housekeeper's job: due retries are dispatched
            async with unit() as uow:
                await uow.session.execute(
                    update(Step)
                    .where(Step.mission_id == mission_id, Step.status == "retry_wait")
                    .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
                )
                locked = await lock_mission(uow.session, mission_id)
                assert locked is not None
                await advance(uow, locked)
            continue
        in_flight = sorted((s for s in steps if s.status in ("dispatched", "running")), key=lambda s: s.key)
        assert in_flight, f"mission {status} with nothing in flight: {[(s.key, s.status) for s in steps]}"
        step = data.draw(st.sampled_from(in_flight), label="step")
        outcome = data.draw(st.sampled_from(["ok", "ok", "ok", "retryable", "fatal"]), label="outcome")
        all_ok = all_ok and outcome == "ok"
        error = None
        if outcome != "ok":
            kind = ErrorType.LLM_UNAVAILABLE if outcome == "retryable" else ErrorType.OUTPUT_INVALID
            error = StepError(type=kind, message=f"planned {outcome}")
        result = WorkResult(
            mission_id=mission_id,
            step_id=step.id,
            attempt=step.attempt,
            result_id=None,
            success=outcome == "ok",
            output={"from": step.key} if outcome == "ok" else None,
            error=error,
        )
        async with unit() as uow:
            await apply_result(uow, settings, result)
        if data.draw(st.booleans(), label="duplicate delivery"):
            async with unit() as uow:  # a redelivered result changes nothing
                await apply_result(uow, settings, result)
    else:
        raise AssertionError("the mission did not finish within 200 moves")

    async with sessionmaker() as session:
        final = await session.scalar(select(Mission.status).where(Mission.id == mission_id))
        steps = list((await session.execute(select(Step).where(Step.mission_id == mission_id))).scalars())
        events = list(
            (
                await session.execute(
                    select(TimelineEventRow)
                    .where(TimelineEventRow.mission_id == mission_id)
                    .order_by(TimelineEventRow.id)
                )
            ).scalars()
        )
    assert final in ("succeeded", "failed")
    by_key = {s.key: s for s in steps}

    # Every dispatch comes after each dependency finished well, and a step succeeds at most once.
    done_at: dict[str, int] = {}
    succeeded: dict[str, int] = {}
    for event in events:
        if event.type in ("step.succeeded", "step.skipped"):
            done_at.setdefault(event.step_key or "", event.id)
            succeeded[event.step_key or ""] = succeeded.get(event.step_key or "", 0) + (event.type == "step.succeeded")
        if event.type == "step.dispatched":
            for dep in by_key[event.step_key or ""].depends_on:
                assert dep in done_at and done_at[dep] < event.id, f"{event.step_key} dispatched before {dep} finished"
    assert all(n <= 1 for n in succeeded.values())
    assert all(s.attempt <= s.max_attempts for s in steps)
    assert all(s.status in ("succeeded", "skipped", "failed", "cancelled") for s in steps)

    if final == "succeeded":
        assert {k: s.status for k, s in by_key.items()} == expected_when_all_succeed(definition, go)
    else:
        assert any(s.status == "failed" for s in steps)
        assert not all_ok


async def _start(
    uow: UnitOfWork, settings: Settings, workflow: Workflow, parsed: WorkflowDefinition, go: bool, start: str
) -> uuid.UUID:
    """A mission of ``workflow`` with input ``{"go": go}``: requested, fired by a schedule, or
    started by an event delivered to a trigger."""
    if start == "schedule":
        schedule = Schedule(
            id=uuid.uuid4(),
            name=parsed.name,
            workflow=parsed.name,
            interval_s=3600,
            timezone="UTC",
            jitter_s=0.0,
            input={"go": go},
            overlap="skip",
        )
        set_next_fire(schedule, datetime.now(UTC))
        uow.session.add(schedule)
        await uow.session.flush()
        fired = await fire(uow, settings, schedule, schedule.next_fire_at, FireKind.SCHEDULED)
        assert fired.outcome is FireOutcome.STARTED and fired.mission_id is not None
        return fired.mission_id
    if start == "event":
        trigger = Trigger(
            id=uuid.uuid4(), name=parsed.name, event="go", workflow=parsed.name, input={"go": "{{ event.payload.go }}"}
        )
        uow.session.add(trigger)
        await uow.session.flush()
        delivered = await deliver(uow, settings, None, trigger, TriggerType.EVENT, "e-1", "go", {"go": go})
        assert delivered.outcome is DeliveryOutcome.STARTED and delivered.mission_id is not None
        return delivered.mission_id
    mission = await create_mission(
        uow,
        settings,
        workflow,
        parsed,
        mission_input={"go": go},
        priority=0,
        caller="property",
        budget_usd=None,
        budget_tokens=None,
        idempotency_key=None,
        traceparent=None,
    )
    return mission.id
