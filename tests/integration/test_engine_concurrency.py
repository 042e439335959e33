"""Results applied by concurrent transactions (two batches in flight, two replicas): a transaction
that waited for a mission's lock still sees its steps as they are now. And the group-commit
batcher: a failing piece fails alone, every caller gets an answer, shutdown leaves nobody waiting."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text

from services.common.contracts import StepStarted, WorkResult
from services.common.db.models import Mission, Step
from services.orchestrator.engine.batch import BatcherClosed, UnitBatcher
from services.orchestrator.engine.results import apply_result, apply_started
from services.orchestrator.engine.unit import UnitOfWork
from tests.conftest import wait_for
from tests.integration.test_control_engine import _mission as create_test_mission

JOIN = {
    "name": "join",
    "steps": [
        {"id": "a", "agent": "echo", "input": {}},
        {"id": "b", "agent": "echo", "input": {}},
        {"id": "c", "agent": "echo", "depends_on": ["a", "b"], "input": {}},
    ],
}


async def _mission(parts: Any) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    mission_id = await create_test_mission(parts, JOIN)
    async with parts[1]() as session:
        steps = (await session.execute(select(Step.key, Step.id).where(Step.mission_id == mission_id))).all()
    return mission_id, {str(key): step_id for key, step_id in steps}


def _result(mission_id: uuid.UUID, step_id: uuid.UUID) -> WorkResult:
    return WorkResult(
        mission_id=mission_id,
        step_id=step_id,
        attempt=1,
        result_id=uuid.uuid4(),
        success=True,
        output={"ok": True},
        worker="w-1",
        started_at=datetime.now(UTC),
    )


async def _statuses(parts: Any, mission_id: uuid.UUID) -> tuple[str, dict[str, str]]:
    _, sessionmaker, _ = parts
    async with sessionmaker() as session:
        mission = await session.get_one(Mission, mission_id)
        steps = (await session.execute(select(Step.key, Step.status).where(Step.mission_id == mission_id))).all()
    return mission.status, {str(key): str(status) for key, status in steps}


async def test_a_result_applied_after_waiting_for_the_lock_sees_the_steps_as_they_are_now(
    engine_parts: Any,
) -> None:
    settings, sessionmaker, bus = engine_parts
    mission_id, steps = await _mission(engine_parts)
    second_done = asyncio.Event()

    async def second() -> None:  # blocks on the mission's lock, held by the first
        async with UnitOfWork(sessionmaker, bus) as uow:
            await apply_result(uow, settings, _result(mission_id, steps["b"]))
        second_done.set()

    async with UnitOfWork(sessionmaker, bus) as uow:
        await apply_result(uow, settings, _result(mission_id, steps["a"]))
        await uow.session.flush()
        task = asyncio.create_task(second())
        await wait_for(lambda: _waiting_on_a_lock(engine_parts), timeout_s=10, what="the second to wait for the lock")
        assert not second_done.is_set()
    await task
    mission_status, statuses = await _statuses(engine_parts, mission_id)
    assert statuses == {"a": "succeeded", "b": "succeeded", "c": "dispatched"}, statuses
    assert mission_status == "running"


async def test_a_late_step_started_never_moves_a_finished_step_back(engine_parts: Any) -> None:
    settings, sessionmaker, bus = engine_parts
    mission_id, steps = await _mission(engine_parts)
    started = StepStarted(
        mission_id=mission_id, step_id=steps["a"], attempt=1, worker="w-1", started_at=datetime.now(UTC)
    )

    async def late_start() -> None:
        async with UnitOfWork(sessionmaker, bus) as uow:
            await apply_started(uow, started)

    async with UnitOfWork(sessionmaker, bus) as uow:
        await apply_result(uow, settings, _result(mission_id, steps["a"]))
        await uow.session.flush()
        task = asyncio.create_task(late_start())
        await wait_for(lambda: _waiting_on_a_lock(engine_parts), timeout_s=10, what="the start to wait for the lock")
    await task
    assert (await _statuses(engine_parts, mission_id))[1]["a"] == "succeeded"


async def _waiting_on_a_lock(parts: Any) -> bool:
    """Whether one of this test's connections waits for a row lock."""
    _, sessionmaker, _ = parts
    async with sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'coo-property-test' LIMIT 1"
            )
        )
        return rows.first() is not None


async def test_a_failing_piece_of_a_batch_fails_alone(engine_parts: Any) -> None:
    _, sessionmaker, bus = engine_parts
    batcher = UnitBatcher(lambda: UnitOfWork(sessionmaker, bus), runners=1, name="test")
    gate = asyncio.Event()

    async def slow(uow: UnitOfWork) -> str:
        await gate.wait()  # holds the runner so that the next three queue up as one batch
        return "first"

    async def ok(uow: UnitOfWork) -> str:
        await uow.session.execute(select(1))
        return "ok"

    async def bad(uow: UnitOfWork) -> str:
        raise ValueError("this one is wrong")

    try:
        first = asyncio.create_task(batcher.run(slow))
        await wait_for(lambda: bool(batcher._tasks), timeout_s=5, what="a runner")
        rest = [asyncio.create_task(batcher.run(work)) for work in (ok, bad, ok)]
        await wait_for(lambda: len(batcher._queue) == 3, timeout_s=5, what="three queued")
        gate.set()
        assert await first == "first"
        results = await asyncio.gather(*rest, return_exceptions=True)
        assert results[0] == "ok" and results[2] == "ok"
        assert isinstance(results[1], ValueError)
    finally:
        await batcher.close()


async def test_closing_the_batcher_answers_every_caller(engine_parts: Any) -> None:
    _, sessionmaker, bus = engine_parts
    batcher = UnitBatcher(lambda: UnitOfWork(sessionmaker, bus), runners=1, name="test")
    never = asyncio.Event()

    async def stuck(uow: UnitOfWork) -> None:
        await never.wait()

    in_flight = asyncio.create_task(batcher.run(stuck))
    await wait_for(lambda: not batcher._queue and bool(batcher._tasks), timeout_s=5, what="the piece to start")
    queued = asyncio.create_task(batcher.run(stuck))
    await wait_for(lambda: len(batcher._queue) == 1, timeout_s=5, what="one queued")
    await batcher.close()
    for task in (in_flight, queued):
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(task, timeout=5)
    with pytest.raises(BatcherClosed):
        await batcher.run(stuck)
