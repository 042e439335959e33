"""``/v1/workflows``: register (JSON or YAML) and read workflow versions."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Depends, Query, Request

from services.common.http import ApiError, error_responses
from services.orchestrator.api.deps import (
    KEY_ERRORS,
    SCOPE_ERRORS,
    AdminDep,
    CallerDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.openapi import ref
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.commands import catalog
from services.orchestrator.engine.dag import WorkflowDefinition
from services.orchestrator.reads.catalog import WorkflowOut, latest_workflows, read_workflow

router = APIRouter(
    prefix="/v1/workflows",
    tags=["workflows"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)

MAX_BODY_BYTES = 1024 * 1024
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


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


# The route reads its body itself (JSON or YAML): the same definition either way.
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ref(WorkflowDefinition)},
            "application/yaml": {"schema": ref(WorkflowDefinition)},
        },
    }
}


@router.post(
    "",
    status_code=201,
    summary="Register a workflow version (JSON or YAML body)",
    openapi_extra=_BODY_DOC,
    responses=responses(
        SCOPE_ERRORS,
        error_responses(
            413,
            415,
            422,
            described={422: "Invalid definition; `field` is a JSON pointer to the offending field"},
        ),
    ),
)
async def register_workflow(request: Request, state: StateDep, _: AdminDep) -> WorkflowOut:
    registered = await catalog.register_workflow(state, await read_definition_body(request))
    note_target("workflow", registered.name)
    return registered


@router.get("", summary="List workflows (latest version of each)")
async def list_workflows(state: StateDep, _: CallerDep) -> list[WorkflowOut]:
    return await latest_workflows(state)


@router.get("/{name}", summary="Read a workflow (latest version, or ?version=N)", responses=error_responses(404))
async def get_workflow(
    name: str, state: StateDep, _: CallerDep, version: int | None = Query(default=None, ge=1, le=2_147_483_647)
) -> WorkflowOut:
    return await read_workflow(state, name, version)
