"""``GET /v1/missions/{id}`` answers the very JSON that ``MissionOut`` gives, for missions in every
state, read in one statement without ORM entities."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.db.models import Mission, Step, Workflow
from services.common.db.session import create_engine, create_sessionmaker
from services.common.settings import Settings
from services.orchestrator.engine.admission import queue_position
from services.orchestrator.reads.missions import (
    MissionOut,
    get_mission,
    mission_out,
    read_mission,
    read_mission_json,
)
from services.orchestrator.state import OrchestratorState
from tests.conftest import API_KEY, RunningApp, running_apps

ORDER = ["fetch", "analyse", "report"]  # the definition's order, not the keys' alphabetical one
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(settings, application_name="coo-mission-read-test", pool_size=2)
    try:
        yield engine, create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _steps(mission_id: uuid.UUID, outcomes: dict[str, dict[str, Any]]) -> list[Step]:
    return [
        Step(
            mission_id=mission_id,
            key=key,
            agent="echo",
            depends_on=ORDER[:i],
            input={"from": key},
            **outcomes.get(key, {}),
        )
        for i, key in enumerate(ORDER)
    ]


async def _missions(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, uuid.UUID]:
    workflow = Workflow(
        name="three",
        version=1,
        definition={"name": "three", "steps": [{"id": k, "agent": "echo"} for k in ORDER]},
    )
    ids: dict[str, uuid.UUID] = {}
    async with sessionmaker() as session, session.begin():
        session.add(workflow)
        await session.flush()

        def mission(name: str, **values: Any) -> Mission:
            row = Mission(
                id=uuid.uuid4(),
                workflow_id=workflow.id,
                workflow_name="three",
                workflow_version=1,
                input={"text": "héllo ✓", "n": 1.5, "nested": {"list": [1, None, True]}, "big": 10**20},
                **values,
            )
            ids[name] = row.id
            session.add(row)
            return row

        mission("queued_first", status="queued", created_at=T0)
        mission("queued_urgent", status="queued", priority=5, created_at=T0 + timedelta(seconds=2))
        mission("queued_last", status="queued", created_at=T0 + timedelta(seconds=1), budget_usd=Decimal("2.5"))
        running = mission(
            "running",
            status="running",
            started_at=T0 + timedelta(microseconds=120_000),
            budget_tokens=10_000,
            spent_tokens=1234,
            spent_usd=Decimal("0.01234567"),
        )
        succeeded = mission(
            "succeeded",
            status="succeeded",
            output={"answer": 42, "words": ["a", "b"]},
            budget_usd=Decimal("10"),
            spent_usd=Decimal("1.5"),
            idempotency_key="once",
            started_at=T0,
            finished_at=T0 + timedelta(minutes=3, microseconds=1),
        )
        failed = mission(
            "failed",
            status="failed",
            error={"type": "agent_crash", "message": "boom", "retryable": False},
            finished_at=T0 + timedelta(hours=1),
        )
        mission("paused", status="paused", pause_reason="budget_exceeded")
        await session.flush()
        session.add_all(
            _steps(
                running.id,
                {
                    "fetch": {"status": "succeeded", "attempt": 1, "output": {"lines": 3}, "finished_at": T0},
                    "analyse": {
                        "status": "retry_wait",
                        "attempt": 2,
                        "error": {"type": "timeout", "message": "too slow"},
                        "next_attempt_at": T0 + timedelta(seconds=30),
                        "dispatched_at": T0,
                        "started_at": T0 + timedelta(milliseconds=5),
                    },
                },
            )
        )
        session.add_all(
            _steps(succeeded.id, {k: {"status": "succeeded", "attempt": 1, "output": {"k": k}} for k in ORDER})
        )
        session.add_all(_steps(failed.id, {"fetch": {"status": "failed", "error": {"type": "internal"}}}))
    return ids


async def _expected(sessionmaker: async_sessionmaker[AsyncSession], mission_id: uuid.UUID) -> dict[str, Any]:
    """What the route answered before: the ORM entities through ``MissionOut``."""
    async with sessionmaker() as session:
        mission = await get_mission(session, mission_id)
        steps = list((await session.execute(select(Step).where(Step.mission_id == mission_id))).scalars())
        steps.sort(key=lambda s: ORDER.index(s.key))
        return mission_out(mission, await queue_position(session, mission), steps).model_dump(mode="json")


def _state(settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
    """The parts of the orchestrator's state a read uses."""
    return cast(OrchestratorState, SimpleNamespace(settings=settings, engine=engine, reads=sessionmaker))


async def test_the_answer_is_what_mission_out_gives_in_every_state(
    settings: Settings, db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]]
) -> None:
    engine, sessionmaker = db
    ids = await _missions(sessionmaker)
    state = _state(settings, engine, sessionmaker)
    positions = {}
    for name, mission_id in ids.items():
        expected = await _expected(sessionmaker, mission_id)
        body = await read_mission_json(state, mission_id)
        assert orjson.loads(body) == expected, name
        assert list(orjson.loads(body)) == list(expected), name  # the same fields in the same order
        model = await read_mission(state, mission_id)  # the console's read: the same mission
        assert model.model_dump(mode="json") == expected, name
        positions[name] = expected["queue_position"]

    assert positions == {
        "queued_first": 2,
        "queued_urgent": 1,
        "queued_last": 3,
        "running": None,
        "succeeded": None,
        "failed": None,
        "paused": None,
    }
    running = orjson.loads(await read_mission_json(state, ids["running"]))
    assert [s["key"] for s in running["steps"]] == ORDER
    assert running["spent_usd"] == "0.01234567" and running["started_at"] == "2026-03-01T12:00:00.120000Z"
    assert running["steps"][1]["error"] == {"type": "timeout", "message": "too slow"}
    assert running["input"]["big"] == 10**20 and running["input"]["text"] == "héllo ✓"


async def test_the_route_answers_the_same_json_and_documents_mission_out(
    settings: Settings, db: tuple[AsyncEngine, async_sessionmaker[AsyncSession]]
) -> None:
    from services.orchestrator.app import create_app

    _, sessionmaker = db
    ids = await _missions(sessionmaker)
    async with running_apps(settings, create_app) as apps:
        app: RunningApp = apps[0]
        async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            for name in ("queued_last", "running", "failed"):
                answer = await client.get(f"/v1/missions/{ids[name]}")
                assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
                assert answer.json() == await _expected(sessionmaker, ids[name]), name
            unknown = uuid.uuid4()
            missing = await client.get(f"/v1/missions/{unknown}")
            assert missing.status_code == 404
            assert missing.json() == {
                "error": {"type": "not_found", "message": f"mission {unknown} not found", "field": "id"}
            }
            schema = (await client.get("/openapi.json")).json()
    ok = schema["paths"]["/v1/missions/{mission_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MissionOut"}
    assert set(schema["components"]["schemas"]["MissionOut"]["properties"]) == set(MissionOut.model_fields)
