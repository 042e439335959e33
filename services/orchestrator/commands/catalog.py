"""Changing the catalog: create or update an agent, register a workflow version."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.common.db.models import Agent, Workflow
from services.orchestrator.engine.dag import DefinitionError, parse_definition
from services.orchestrator.errors import Conflict, InvalidInput
from services.orchestrator.reads.catalog import NAME_PATTERN, AgentOut, AgentSpec, WorkflowOut
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable


async def put_agent(state: OrchestratorState, name: str, spec: AgentSpec) -> AgentOut:
    """Create ``name`` or update it (its version grows), or raise ``InvalidInput`` / ``Conflict``. A
    ``name`` in the body must be the path's."""
    require_storable(spec.model_dump(mode="json"), "body")
    if not re.match(NAME_PATTERN, name):
        raise InvalidInput(f"name: must match {NAME_PATTERN}", field="name")
    if spec.name is not None and spec.name != name:
        raise InvalidInput(f"name: '{spec.name}' is not the agent's name in the path ('{name}')", field="name")
    if spec.output_schema is not None:
        _check_schema(spec.output_schema)
    for _attempt in range(3):
        try:
            return await _upsert(state, name, spec)
        except IntegrityError:
            continue  # created concurrently: update it instead
    raise Conflict(f"agent '{name}' is being changed concurrently; retry", field="name")


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
        return AgentOut.model_validate(row)


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(f"output_schema: {exc.message}", field="output_schema") from exc


async def register_workflow(state: OrchestratorState, raw: dict[str, Any]) -> WorkflowOut:
    """Register ``raw`` as the next version of its workflow, or raise ``InvalidInput`` (the field
    pointer names what is wrong) / ``Conflict``."""
    require_storable(raw, "body")
    async with state.sessionmaker() as session:
        known = set((await session.execute(select(Agent.name).where(Agent.enabled.is_(True)))).scalars())
    try:
        definition = parse_definition(raw, known_agents=known)
    except DefinitionError as exc:
        raise InvalidInput(f"{exc.pointer}: {exc.message}", field=exc.pointer) from exc
    stored = definition.model_dump(mode="json", by_alias=True, exclude_defaults=False)
    for _attempt in range(5):
        try:
            async with state.sessionmaker() as session, session.begin():
                latest = await session.scalar(
                    select(func.max(Workflow.version)).where(Workflow.name == definition.name)
                )
                row = Workflow(name=definition.name, version=int(latest or 0) + 1, definition=stored)
                session.add(row)
                await session.flush()
                await session.refresh(row)
                return WorkflowOut.model_validate(row)
        except IntegrityError:
            continue  # another registration took this version number: take the next
    raise Conflict(f"workflow '{definition.name}' is being registered concurrently; retry")
