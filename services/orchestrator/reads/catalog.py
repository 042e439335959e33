"""Reads of the catalog: agent definitions and workflow versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Agent, Workflow
from services.orchestrator.engine.missions import workflow_not_found
from services.orchestrator.errors import NotFound
from services.orchestrator.state import OrchestratorState

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MCP_SERVER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,40}$"
MCP_TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class McpServerSpec(BaseModel):
    """A remote MCP server (streamable HTTP) whose tools the agent is offered, each as
    ``mcp__<name>__<tool>``; only the tools of ``tools`` when it is given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=MCP_SERVER_NAME_PATTERN, examples=["inventory"])
    url: str = Field(max_length=2000, examples=["http://127.0.0.1:8765/mcp"])
    tools: list[Annotated[str, Field(pattern=MCP_TOOL_NAME_PATTERN)]] | None = Field(
        default=None,
        max_length=128,
        exclude_if=lambda tools: tools is None,  # stored and answered only when given
        description="The server's tools the agent may call (all when absent).",
    )
    headers_secret: None = Field(
        default=None, exclude=True, description="Not supported yet: servers are called without credentials."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (secrets for MCP servers are not supported yet)")
        return url

    @field_validator("headers_secret", mode="before")
    @classmethod
    def _no_secrets(cls, _value: object) -> None:
        raise ValueError("secrets for MCP servers are not supported yet: servers are called without headers")


class AgentSpec(BaseModel):
    """An agent's definition as ``PUT /v1/agents/{name}`` takes it. ``name`` may be given (so an agent
    file can be sent as it is) and must then be the path's; it is never stored from the body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, max_length=100, exclude=True)
    description: str = Field(default="", max_length=2000)
    model: str = Field(min_length=1, max_length=200, examples=["offline", "claude-sonnet-4-5"])
    system_prompt: str = Field(default="", max_length=100_000)
    tools: list[str] = Field(default_factory=list, max_length=64)
    approval_policy: Literal["auto", "approval_required"] = "auto"
    output_schema: dict[str, Any] | None = None
    mcp_servers: list[McpServerSpec] = Field(default_factory=list, max_length=16)
    enabled: bool = Field(default=True, strict=True)  # 1 is not true

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServerSpec]) -> list[McpServerSpec]:
        names = [server.name for server in servers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"server names must be unique: {repeated} appear more than once")
        return servers


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
        raise workflow_not_found(name, version)
    return row
