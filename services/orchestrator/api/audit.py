"""``GET /v1/audit``: the audit trail of mutating calls (admin only)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from services.orchestrator.api.deps import KEY_ERRORS, SCOPE_ERRORS, AdminDep, StateDep, operation_id
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import find_audit_events
from services.orchestrator.reads.paging import CURSOR_DESCRIPTION, CURSOR_PATTERN

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    time: datetime = Field(validation_alias="created_at")
    key_id: uuid.UUID | None
    key_name: str
    scope: str
    method: str
    route: str = Field(description="The route template, such as /v1/missions/{mission_id}/pause.")
    path: str
    target: str | None = Field(description="What the call acted on, such as mission:<id> or key:<id>.")
    outcome: int = Field(description="The HTTP status answered.")


class AuditPageOut(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


@router.get("", summary="Mutating calls and their outcome, newest first (cursor paging)", responses=SCOPE_ERRORS)
async def list_audit_events(
    state: StateDep,
    _: AdminDep,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, pattern=CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
    key: str | None = Query(default=None, max_length=100, description="Only calls made with this key name."),
    route: str | None = Query(default=None, max_length=300, description="Only calls of this route template."),
) -> AuditPageOut:
    page = await find_audit_events(state, limit=limit, cursor=cursor, key=key, route=route)
    return AuditPageOut(
        items=[AuditEventOut.model_validate(e) for e in page.items],
        next_cursor=page.next_cursor,
    )
