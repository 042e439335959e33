"""Before running a work item: is its attempt still wanted? Paused missions wait, stale or
cancelled attempts are dropped, a copy of a running attempt comes back later.

One statement answers all of it, and claims the attempt (a transaction-scoped advisory lock) in the
same round trip: the worker's whole bookkeeping for an attempt is this query and one insert."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts import WorkItem
from services.common.db.models import Agent, AgentResult, Mission, Step
from services.common.status import MissionStatus, StepStatus

_STEP_IN_FLIGHT = frozenset({StepStatus.DISPATCHED, StepStatus.RUNNING})


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    model: str
    system_prompt: str
    tools: tuple[str, ...]
    output_schema: dict[str, Any] | None
    enabled: bool = True
    mcp_servers: tuple[dict[str, Any], ...] = ()  # {"name", "url", "tools"?}: as PUT /v1/agents stored them


@dataclass(frozen=True)
class Verdict:
    """``run`` (claimed, agent known), ``done`` (a result is stored), ``busy`` (a copy holds the
    claim), ``wait`` (paused mission) or ``drop`` (stale, cancelled or unknown)."""

    action: Literal["run", "done", "busy", "wait", "drop"]
    reason: str = ""
    agent: AgentDefinition | None = None


# Built once: only its parameters change from one attempt to the next.
_CLAIM = (
    select(
        Mission.status,
        Mission.pause_reason,
        Step.status,
        Step.attempt,
        func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock_key"), 0)),
        exists().where(AgentResult.step_id == Step.id, AgentResult.attempt == bindparam("attempt")),
        Agent.name,
        Agent.model,
        Agent.system_prompt,
        Agent.tools,
        Agent.output_schema,
        Agent.enabled,
        Agent.mcp_servers,
    )
    .select_from(Step)
    .join(Mission, Mission.id == Step.mission_id)
    .outerjoin(Agent, Agent.name == bindparam("agent"))
    .where(Step.id == bindparam("step_id"), Mission.id == bindparam("mission_id"))
)


_STORED = select(
    exists().where(AgentResult.step_id == bindparam("step_id"), AgentResult.attempt == bindparam("attempt"))
)


async def claim_attempt(session: AsyncSession, item: WorkItem) -> Verdict:
    """Decide, inside ``session``'s transaction, whether this worker runs the attempt now. A ``run``
    verdict holds the attempt's lock until the transaction ends."""
    params = {
        "lock_key": f"coo-attempt:{item.step_id}:{item.attempt}",
        "attempt": item.attempt,
        "agent": item.agent,
        "step_id": item.step_id,
        "mission_id": item.mission_id,
    }
    connection = await session.connection()  # Core: nothing here needs the ORM's bookkeeping
    row = (await connection.execute(_CLAIM, params)).one_or_none()
    if row is None:
        return Verdict("drop", "its mission or step no longer exists")
    (mission_status, pause_reason, step_status, attempt, claimed, done, *_) = row
    if mission_status == MissionStatus.PAUSED:
        return Verdict("wait", f"mission is paused ({pause_reason or 'manual'})")
    if mission_status != MissionStatus.RUNNING:
        return Verdict("drop", f"mission is {mission_status}")
    if attempt != item.attempt:
        return Verdict("drop", f"the step is at attempt {attempt}, this work item is attempt {item.attempt}")
    if step_status not in _STEP_IN_FLIGHT:
        return Verdict("drop", f"the step is {step_status}")
    if not claimed:
        return Verdict("busy", f"attempt {item.attempt} of step {item.step_id} is running elsewhere")
    if done or (await connection.execute(_STORED, params)).scalar_one():
        # (Asked again once the lock is held: the first read's snapshot predates the lock, and a
        # copy that finished in between would otherwise run the attempt a second time.)
        return Verdict("done", "a result of this attempt is already stored")
    if row.name is None:
        return Verdict("run")  # the attempt fails with a clear VALIDATION error
    agent = AgentDefinition(
        row.name,
        row.model,
        row.system_prompt,
        tuple(row.tools),
        row.output_schema,
        bool(row.enabled),
        tuple(row.mcp_servers or ()),
    )
    return Verdict("run", agent=agent)
