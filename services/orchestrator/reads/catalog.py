"""Reads of the catalog: agent definitions and workflow versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Agent, Workflow
from services.orchestrator.engine.missions import WorkflowRef
from services.orchestrator.errors import NotFound
from services.orchestrator.state import OrchestratorState

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"


class AgentSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", max_length=2000)
    model: str = Field(min_length=1, max_length=200, examples=["offline", "claude-sonnet-4-5"])
    system_prompt: str = Field(default="", max_length=100_000)
    tools: list[str] = Field(default_factory=list, max_length=64)
    approval_policy: Literal["auto", "approval_required"] = "auto"
    output_schema: dict[str, Any] | None = None
    enabled: bool = True


class AgentOut(AgentSpec):
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)

    name: str
    version: int
    created_at: datetime
    updated_at: datetime


class WorkflowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    version: int
    created_at: datetime
    definition: dict[str, Any]


async def read_agents(state: OrchestratorState) -> list[AgentOut]:
    """Every agent definition, by name."""
    async with state.sessionmaker() as session:
        rows = (await session.execute(select(Agent).order_by(Agent.name))).scalars()
        return [AgentOut.model_validate(row) for row in rows]


async def read_agent(state: OrchestratorState, name: str) -> AgentOut:
    """One agent definition, or ``NotFound``."""
    async with state.sessionmaker() as session:
        row = (await session.execute(select(Agent).where(Agent.name == name))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"agent '{name}' not found", field="name")
        return AgentOut.model_validate(row)


async def latest_workflows(state: OrchestratorState) -> list[WorkflowOut]:
    """The latest version of each workflow, by name."""
    async with state.sessionmaker() as session:
        latest = select(Workflow.name, func.max(Workflow.version).label("version")).group_by(Workflow.name).subquery()
        rows = await session.execute(
            select(Workflow)
            .join(latest, (Workflow.name == latest.c.name) & (Workflow.version == latest.c.version))
            .order_by(Workflow.name)
        )
        return [WorkflowOut.model_validate(row) for row in rows.scalars()]


async def read_workflow(state: OrchestratorState, name: str, version: int | None) -> WorkflowOut:
    """One workflow version (the latest when ``version`` is None), or ``NotFound``."""
    async with state.sessionmaker() as session:
        row = await find_workflow(session, name, version)
        return WorkflowOut.model_validate(row)


async def find_workflow(session: AsyncSession, name: str, version: int | None) -> Workflow:
    query = select(Workflow).where(Workflow.name == name)
    query = query.where(Workflow.version == version) if version is not None else query.order_by(Workflow.version.desc())
    row = (await session.execute(query.limit(1))).scalar_one_or_none()
    if row is None:
        raise _workflow_not_found(name, version)
    return row


# What a submission needs of its workflow (the definition itself is cached by id), built once.
_REF_LATEST = (
    select(Workflow.id, Workflow.name, Workflow.version)
    .where(Workflow.name == bindparam("name"))
    .order_by(Workflow.version.desc())
    .limit(1)
)
_REF_VERSION = select(Workflow.id, Workflow.name, Workflow.version).where(
    Workflow.name == bindparam("name"), Workflow.version == bindparam("version")
)


async def find_workflow_ref(session: AsyncSession, name: str, version: int | None) -> WorkflowRef:
    """The id, name and version of a workflow (the latest when ``version`` is None), or 404."""
    query, params = (
        (_REF_LATEST, {"name": name}) if version is None else (_REF_VERSION, {"name": name, "version": version})
    )
    # On the connection (Core): a submission batch's earlier missions are not flushed by this read.
    row = (await (await session.connection()).execute(query, params)).one_or_none()
    if row is None:
        raise _workflow_not_found(name, version)
    return WorkflowRef(row.id, row.name, row.version)


def _workflow_not_found(name: str, version: int | None) -> NotFound:
    what = f"workflow '{name}'" + (f" version {version}" if version is not None else "")
    return NotFound(f"{what} not found", field="workflow")
