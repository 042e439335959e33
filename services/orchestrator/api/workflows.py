"""``/v1/workflows``: register (JSON or YAML) and read workflow versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from services.common.db.models import Agent, Workflow
from services.common.http import ApiError
from services.orchestrator.api.deps import AdminDep, CallerDep, StateDep
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.engine.dag import DefinitionError, WorkflowDefinition, parse_definition
from services.orchestrator.engine.missions import WorkflowRef
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], dependencies=[Depends(storable_params)])

MAX_BODY_BYTES = 1024 * 1024
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class WorkflowOut(BaseModel):
    id: uuid.UUID
    name: str
    version: int
    created_at: datetime
    definition: dict[str, Any]

    @classmethod
    def of(cls, row: Workflow) -> WorkflowOut:
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            created_at=row.created_at,
            definition=row.definition,
        )


async def read_definition_body(request: Request) -> dict[str, Any]:
    """Parse a JSON or YAML body into a mapping, or raise a 4xx naming the problem."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"workflow definition over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        raise ApiError(422, "validation", "body: empty workflow definition", field="body")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type in YAML_TYPES:
            data = yaml.safe_load(body)
        elif content_type in ("application/json", "") or content_type.endswith("+json"):
            data = orjson.loads(body)
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"content-type '{content_type}': send application/json or application/yaml",
            )
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "YAML" if content_type in YAML_TYPES else "JSON"
        raise ApiError(422, "validation", f"body: invalid {kind}: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "validation", "body: a workflow definition must be a mapping", field="body")
    return data


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": WorkflowDefinition.model_json_schema(by_alias=True)},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "",
    status_code=201,
    summary="Register a workflow version (JSON or YAML body)",
    openapi_extra=_BODY_DOC,
    responses={422: {"description": "Invalid definition; `field` is a JSON pointer to the offending field"}},
)
async def register_workflow(request: Request, state: StateDep, _: AdminDep) -> WorkflowOut:
    raw = await read_definition_body(request)
    require_storable(raw, "body")
    async with state.sessionmaker() as session:
        known = set((await session.execute(select(Agent.name).where(Agent.enabled.is_(True)))).scalars())
    try:
        definition = parse_definition(raw, known_agents=known)
    except DefinitionError as exc:
        raise ApiError(422, "validation", f"{exc.pointer}: {exc.message}", field=exc.pointer) from exc
    note_target("workflow", definition.name)
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
                return WorkflowOut.of(row)
        except IntegrityError:
            continue  # another registration took this version number: take the next
    raise ApiError(409, "conflict", f"workflow '{definition.name}' is being registered concurrently; retry")


@router.get("", summary="List workflows (latest version of each)")
async def list_workflows(state: StateDep, _: CallerDep) -> list[WorkflowOut]:
    return await latest_workflows(state)


async def latest_workflows(state: OrchestratorState) -> list[WorkflowOut]:
    """The latest version of each workflow, by name."""
    async with state.sessionmaker() as session:
        latest = select(Workflow.name, func.max(Workflow.version).label("version")).group_by(Workflow.name).subquery()
        rows = await session.execute(
            select(Workflow)
            .join(latest, (Workflow.name == latest.c.name) & (Workflow.version == latest.c.version))
            .order_by(Workflow.name)
        )
        return [WorkflowOut.of(row) for row in rows.scalars()]


@router.get("/{name}", summary="Read a workflow (latest version, or ?version=N)")
async def get_workflow(
    name: str, state: StateDep, _: CallerDep, version: int | None = Query(default=None, ge=1, le=2_147_483_647)
) -> WorkflowOut:
    return await read_workflow(state, name, version)


async def read_workflow(state: OrchestratorState, name: str, version: int | None) -> WorkflowOut:
    """One workflow version (the latest when ``version`` is None), or ApiError 404."""
    async with state.sessionmaker() as session:
        row = await find_workflow(session, name, version)
        return WorkflowOut.of(row)


async def find_workflow(session: Any, name: str, version: int | None) -> Workflow:
    query = select(Workflow).where(Workflow.name == name)
    query = query.where(Workflow.version == version) if version is not None else query.order_by(Workflow.version.desc())
    row = (await session.execute(query.limit(1))).scalar_one_or_none()
    if row is None:
        raise _workflow_not_found(name, version)
    assert isinstance(row, Workflow)
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


async def find_workflow_ref(session: Any, name: str, version: int | None) -> WorkflowRef:
    """The id, name and version of a workflow (the latest when ``version`` is None), or 404."""
    query, params = (
        (_REF_LATEST, {"name": name}) if version is None else (_REF_VERSION, {"name": name, "version": version})
    )
    row = (await session.execute(query, params)).one_or_none()
    if row is None:
        raise _workflow_not_found(name, version)
    return WorkflowRef(row.id, row.name, row.version)


def _workflow_not_found(name: str, version: int | None) -> ApiError:
    what = f"workflow '{name}'" + (f" version {version}" if version is not None else "")
    return ApiError(404, "not_found", f"{what} not found", field="workflow")
