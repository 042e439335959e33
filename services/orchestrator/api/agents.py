"""``/v1/agents``: the agent registry."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.common.http import error_responses
from services.orchestrator.api.deps import (
    BODY_ERRORS,
    KEY_ERRORS,
    SCOPE_ERRORS,
    AdminDep,
    CallerDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.commands import catalog
from services.orchestrator.reads.catalog import AgentOut, AgentSpec, read_agent, read_agents

router = APIRouter(
    prefix="/v1/agents",
    tags=["agents"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)


@router.get("", summary="List agents")
async def list_agents(state: StateDep, _: CallerDep) -> list[AgentOut]:
    return await read_agents(state)


@router.get("/{name}", summary="Read an agent", responses=error_responses(404))
async def get_agent(name: str, state: StateDep, _: CallerDep) -> AgentOut:
    return await read_agent(state, name)


@router.put(
    "/{name}",
    summary="Create or update an agent (the version grows on each change)",
    responses=responses(SCOPE_ERRORS, BODY_ERRORS),
)
async def put_agent(name: str, spec: AgentSpec, state: StateDep, _: AdminDep) -> AgentOut:
    return await catalog.put_agent(state, name, spec)
