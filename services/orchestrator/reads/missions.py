"""Reads of missions: the list, one mission with its steps, its timeline and every attempt's result."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import AgentResult, Mission, Step, TimelineEventRow
from services.common.money import Money, plain_or_none
from services.common.status import MissionStatus
from services.orchestrator.engine.admission import queue_position
from services.orchestrator.engine.scheduler import definition_for
from services.orchestrator.errors import NotFound
from services.orchestrator.reads.paging import newest_first, split_page
from services.orchestrator.state import OrchestratorState


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key: str
    agent: str
    status: str
    attempt: int
    max_attempts: int
    depends_on: list[str]
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    next_attempt_at: datetime | None
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class MissionOut(BaseModel):
    id: uuid.UUID
    workflow: str
    workflow_version: int
    status: str
    pause_reason: str | None
    priority: int
    queue_position: int | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    budget_usd: Money | None
    budget_tokens: int | None
    spent_usd: Money
    spent_tokens: int
    idempotency_key: str | None
    trigger: dict[str, Any] = Field(
        description='Why it started: {"type": "api"|"schedule"|"event"|"webhook", "name"?, "fire_time"?, "event_id"?}'
    )
    rerun_of: uuid.UUID | None = Field(default=None, description="The mission this one runs again, if a rerun")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut] | None = None


class MissionPage(BaseModel):
    items: list[MissionOut]
    next_cursor: str | None


class TimelineEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: datetime
    type: str
    step_key: str | None
    data: dict[str, Any]
    trace_id: str | None


class IterationOut(BaseModel):
    """One run of the agent inside an attempt, with the verification that followed it."""

    n: int
    output: dict[str, Any] | None
    stdout: str
    stderr: str
    tool_calls: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Money | None
    duration_ms: int
    verification: dict[str, Any] | None
    error_type: str | None


class AgentResultOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    attempt: int
    agent: str
    success: bool
    model: str
    provider: str
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    tool_calls: list[dict[str, Any]]
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Money | None
    duration_ms: int
    verification: dict[str, Any] | None
    iterations: list[IterationOut] = Field(
        default_factory=list,
        description="Each run of the agent in this attempt (more than one when its checks failed and it "
        "iterated); the attempt's own fields are their totals and the last one's output",
    )
    trace_id: str | None
    worker: str
    started_at: datetime
    created_at: datetime

    @field_validator("iterations", mode="before")
    @classmethod
    def _one_run(cls, value: Any) -> Any:
        return [] if value is None else value  # a one-run attempt stores none: ``_result_out`` fills it


def mission_out(mission: Mission, position: int | None, steps: list[Step] | None = None) -> MissionOut:
    return MissionOut(
        id=mission.id,
        workflow=mission.workflow_name,
        workflow_version=mission.workflow_version,
        status=mission.status,
        pause_reason=mission.pause_reason,
        priority=mission.priority,
        queue_position=position,
        input=mission.input,
        output=mission.output,
        error=mission.error,
        budget_usd=mission.budget_usd,
        budget_tokens=mission.budget_tokens,
        spent_usd=mission.spent_usd,
        spent_tokens=mission.spent_tokens,
        idempotency_key=mission.idempotency_key,
        trigger=mission.trigger,
        rerun_of=mission.rerun_of,
        created_at=mission.created_at,
        started_at=mission.started_at,
        finished_at=mission.finished_at,
        steps=None if steps is None else [StepOut.model_validate(s) for s in steps],
    )


async def find_missions(
    state: OrchestratorState,
    *,
    status: str | None,
    workflow: str | None,
    limit: int,
    cursor: str | None,
    trigger: str | None = None,
    trigger_name: str | None = None,
) -> MissionPage:
    """Missions newest first, filtered; the REST list and the console share it."""
    query = newest_first(select(Mission), Mission, limit=limit, cursor=cursor)
    if status is not None:
        query = query.where(Mission.status == status)
    if workflow is not None:
        query = query.where(Mission.workflow_name == workflow)
    if trigger is not None:
        query = query.where(Mission.trigger["type"].astext == trigger)
    if trigger_name is not None:
        query = query.where(Mission.trigger["name"].astext == trigger_name)
    async with state.reads() as session:
        page, next_cursor = split_page(list((await session.execute(query)).scalars()), limit)
        items = [mission_out(m, await queue_position(session, m)) for m in page]
    return MissionPage(items=items, next_cursor=next_cursor)


async def get_mission(session: AsyncSession, mission_id: uuid.UUID) -> Mission:
    mission = await session.get(Mission, mission_id)
    if mission is None:
        raise NotFound(f"mission {mission_id} not found", field="id")
    return mission


# The detail read is the API's hottest: one statement on one pooled connection, straight through
# asyncpg (its own prepared-statement cache), no ORM entity, no JSON decoded to be encoded again.
# The mission, its queue position and its steps come from one snapshot in one round trip; the JSONB
# columns come back as text and are spliced into the answer as they are.
_STEP_COLUMNS = (
    "key",
    "agent",
    "status",
    "attempt",
    "max_attempts",
    "depends_on",
    "input",
    "output",
    "error",
    "next_attempt_at",
    "dispatched_at",
    "started_at",
    "finished_at",
)
_STEP_JSON = frozenset({"depends_on", "input", "output", "error"})
_QUEUED = MissionStatus.QUEUED.value
_MISSION_DETAIL = f"""
SELECT m.id, m.workflow_id, m.workflow_name, m.workflow_version, m.status, m.pause_reason, m.priority,
  m.input::text AS input, m.output::text AS output, m.error::text AS error,
  m.budget_usd, m.budget_tokens, m.spent_usd, m.spent_tokens, m.idempotency_key, m.trigger::text AS trigger,
  m.rerun_of, m.created_at, m.started_at, m.finished_at,
  CASE WHEN m.status = '{_QUEUED}' THEN 1 + (
    SELECT count(*) FROM missions q
    WHERE q.status = '{_QUEUED}' AND (q.priority > m.priority OR (q.priority = m.priority
      AND (q.created_at < m.created_at OR (q.created_at = m.created_at AND q.id < m.id))))
  ) END AS queue_position,
  ARRAY(
    SELECT ROW({", ".join(f"s.{c}::text" if c in _STEP_JSON else f"s.{c}" for c in _STEP_COLUMNS)})
    FROM steps s WHERE s.mission_id = m.id ORDER BY s.key
  ) AS steps
FROM missions m WHERE m.id = $1
"""  # the same queue order as engine.admission.queue_position: (priority desc, created_at, id)

_Row = Mapping[str, Any]  # an asyncpg record

# Each workflow version's step order (its definition's), by workflow id: versions are immutable.
_step_orders: dict[uuid.UUID, dict[str, int]] = {}


async def _fetch_detail(state: OrchestratorState, mission_id: uuid.UUID) -> _Row:
    async with state.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # the asyncpg connection
        row: _Row | None
        if state.settings.db_pgbouncer:  # prepare and execute must reach the same server connection
            async with driver.transaction(readonly=True):
                row = await driver.fetchrow(_MISSION_DETAIL, mission_id)
        else:
            row = await driver.fetchrow(_MISSION_DETAIL, mission_id)
    if row is None:
        raise NotFound(f"mission {mission_id} not found", field="id")
    return row


async def _ordered_steps(state: OrchestratorState, row: _Row) -> list[tuple[Any, ...]]:
    """The steps in their workflow definition's order (unknown keys last, by key)."""
    steps: list[tuple[Any, ...]] = row["steps"]
    if len(steps) < 2:
        return steps
    order = _step_orders.get(row["workflow_id"])
    if order is None:
        async with state.reads() as session:
            definition = await definition_for(session, row["workflow_id"])
        order = {spec.id: i for i, spec in enumerate(definition.steps)}
        if len(_step_orders) > 1024:
            _step_orders.clear()
        _step_orders[row["workflow_id"]] = order
    last = len(order)
    return sorted(steps, key=lambda step: order.get(step[0], last))


def _detail_fields(row: _Row, json_value: Callable[[str | None], Any]) -> dict[str, Any]:
    """MissionOut's fields, in its order, from the detail row (``json_value`` maps a JSONB text)."""
    return {
        "id": str(row["id"]),  # asyncpg's own UUID type, which orjson does not take
        "workflow": row["workflow_name"],
        "workflow_version": row["workflow_version"],
        "status": row["status"],
        "pause_reason": row["pause_reason"],
        "priority": row["priority"],
        "queue_position": row["queue_position"],
        "input": json_value(row["input"]),
        "output": json_value(row["output"]),
        "error": json_value(row["error"]),
        "budget_usd": row["budget_usd"],
        "budget_tokens": row["budget_tokens"],
        "spent_usd": row["spent_usd"],
        "spent_tokens": row["spent_tokens"],
        "idempotency_key": row["idempotency_key"],
        "trigger": json_value(row["trigger"]),
        "rerun_of": None if row["rerun_of"] is None else str(row["rerun_of"]),
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


def _step_fields(step: tuple[Any, ...], json_value: Callable[[str | None], Any]) -> dict[str, Any]:
    return {
        name: json_value(value) if name in _STEP_JSON else value
        for name, value in zip(_STEP_COLUMNS, step, strict=True)
    }


def _fragment(text: str | None) -> orjson.Fragment | None:
    return None if text is None else orjson.Fragment(text)


def _decoded(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


async def read_mission_json(state: OrchestratorState, mission_id: uuid.UUID) -> bytes:
    """``read_mission``'s answer already serialized: the same JSON that ``MissionOut`` gives
    (uuids, ``Z`` timestamps, money as decimal strings), written by orjson (404 when unknown)."""
    row = await _fetch_detail(state, mission_id)
    body = _detail_fields(row, _fragment)
    body["budget_usd"] = plain_or_none(body["budget_usd"])  # as Money writes it
    body["spent_usd"] = plain_or_none(body["spent_usd"])
    body["steps"] = [_step_fields(step, _fragment) for step in await _ordered_steps(state, row)]
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


async def read_mission(state: OrchestratorState, mission_id: uuid.UUID) -> MissionOut:
    """A mission with its steps in definition order (404 when unknown)."""
    row = await _fetch_detail(state, mission_id)
    steps = [StepOut(**_step_fields(step, _decoded)) for step in await _ordered_steps(state, row)]
    return MissionOut(**_detail_fields(row, _decoded), steps=steps)


async def read_timeline(
    state: OrchestratorState, mission_id: uuid.UUID, *, after: int = 0, limit: int = 1000
) -> list[TimelineEventOut]:
    """The mission's timeline events after ``after``, oldest first (404 when the mission is unknown)."""
    async with state.reads() as session:
        await get_mission(session, mission_id)
        rows = await session.execute(
            select(TimelineEventRow)
            .where(TimelineEventRow.mission_id == mission_id, TimelineEventRow.id > after)
            .order_by(TimelineEventRow.id)
            .limit(limit)
        )
        return [TimelineEventOut.model_validate(r) for r in rows.scalars()]


async def read_step_results(state: OrchestratorState, mission_id: uuid.UUID, key: str) -> list[AgentResultOut]:
    """Every attempt's full result of one step, oldest first (404 for an unknown mission or step)."""
    async with state.reads() as session:
        await get_mission(session, mission_id)
        step = (
            await session.execute(select(Step).where(Step.mission_id == mission_id, Step.key == key))
        ).scalar_one_or_none()
        if step is None:
            raise NotFound(f"step '{key}' not found in mission {mission_id}", field="key")
        rows = await session.execute(
            select(AgentResult).where(AgentResult.step_id == step.id).order_by(AgentResult.attempt)
        )
        return [_result_out(r) for r in rows.scalars()]


def _result_out(row: AgentResult) -> AgentResultOut:
    """An attempt with its iterations: stored when the agent ran more than once, else the one run
    that the attempt's own fields describe."""
    stored = row.iterations
    if not stored:
        error_type = (row.error or {}).get("type")
        stored = [
            {
                "n": 1,
                "output": row.output,
                "stdout": row.stdout,
                "stderr": row.stderr,
                "tool_calls": row.tool_calls,
                "tokens_in": row.tokens_in,
                "tokens_out": row.tokens_out,
                "cache_read_tokens": row.cache_read_tokens,
                "cache_write_tokens": row.cache_write_tokens,
                "cost_usd": row.cost_usd,
                "duration_ms": row.duration_ms,
                "verification": row.verification,
                "error_type": error_type,
            }
        ]
    result = AgentResultOut.model_validate(row, from_attributes=True)
    result.iterations = [IterationOut.model_validate(one) for one in stored]
    return result


async def require_mission(state: OrchestratorState, mission_id: uuid.UUID) -> None:
    """``NotFound`` unless the mission exists."""
    async with state.sessionmaker() as session:
        await get_mission(session, mission_id)


EVENTS_PAGE = 5000


def _event_dict(row: TimelineEventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "mission_id": str(row.mission_id),
        "ts": row.ts.isoformat(),
        "type": row.type,
        "step_key": row.step_key,
        "data": row.data,
        "trace_id": row.trace_id,
    }


async def events_after(state: OrchestratorState, mission_id: uuid.UUID, after: int) -> tuple[list[dict[str, Any]], str]:
    """The events after ``after`` and the mission's status, the status read *first*: a final
    status seen here means every event of the mission is already committed and in this read."""
    async with state.sessionmaker() as session:
        status = await session.scalar(select(Mission.status).where(Mission.id == mission_id))
        rows = await session.execute(
            select(TimelineEventRow)
            .where(TimelineEventRow.mission_id == mission_id, TimelineEventRow.id > after)
            .order_by(TimelineEventRow.id)
            .limit(EVENTS_PAGE)
        )
        events = [_event_dict(r) for r in rows.scalars()]
    return events, str(status)
