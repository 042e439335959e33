"""``/v1/agents``: the agent registry."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.common.db.models import Agent
from services.common.http import ApiError
from services.orchestrator.api.deps import AdminDep, CallerDep, StateDep
from services.orchestrator.api.storable import storable_params
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable

router = APIRouter(prefix="/v1/agents", tags=["agents"], dependencies=[Depends(storable_params)])

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
    name: str
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Agent) -> AgentOut:
        return cls(
            name=row.name,
            description=row.description,
            model=row.model,
            system_prompt=row.system_prompt,
            tools=list(row.tools),
            approval_policy=row.approval_policy,
            output_schema=row.output_schema,
            enabled=row.enabled,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@router.get("", summary="List agents")
async def list_agents(state: StateDep, _: CallerDep) -> list[AgentOut]:
    return await read_agents(state)


async def read_agents(state: OrchestratorState) -> list[AgentOut]:
    """Every agent definition, by name."""
    async with state.sessionmaker() as session:
        rows = (await session.execute(select(Agent).order_by(Agent.name))).scalars()
        return [AgentOut.of(row) for row in rows]


@router.get("/{name}", summary="Read an agent")
async def get_agent(name: str, state: StateDep, _: CallerDep) -> AgentOut:
    async with state.sessionmaker() as session:
        row = (await session.execute(select(Agent).where(Agent.name == name))).scalar_one_or_none()
        if row is None:
            raise ApiError(404, "not_found", f"agent '{name}' not found", field="name")
        return AgentOut.of(row)


@router.put("/{name}", summary="Create or update an agent (the version grows on each change)")
async def put_agent(name: str, spec: AgentSpec, state: StateDep, _: AdminDep) -> AgentOut:
    require_storable(spec.model_dump(mode="json"), "body")
    if not re.match(NAME_PATTERN, name):
        raise ApiError(422, "validation", f"name: must match {NAME_PATTERN}", field="name")
    if spec.output_schema is not None:
        _check_schema(spec.output_schema)
    for _attempt in range(3):
        try:
            return await _upsert(state, name, spec)
        except IntegrityError:
            continue  # created concurrently: update it instead
    raise ApiError(409, "conflict", f"agent '{name}' is being changed concurrently; retry", field="name")


async def _upsert(state: OrchestratorState, name: str, spec: AgentSpec) -> AgentOut:
    async with state.sessionmaker() as session, session.begin():
        row = (await session.execute(select(Agent).where(Agent.name == name).with_for_update())).scalar_one_or_none()
        if row is None:
            row = Agent(name=name, version=1, **spec.model_dump())
            session.add(row)
        else:
            for key, value in spec.model_dump().items():
                setattr(row, key, value)
            row.version += 1
        await session.flush()
        await session.refresh(row)
        return AgentOut.of(row)


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ApiError(422, "validation", f"output_schema: {exc.message}", field="output_schema") from exc
