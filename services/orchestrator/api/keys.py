"""``/v1/keys``: scoped API keys (admin only). A key is shown once, when it is made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from services.common.db.models import ApiKey
from services.common.http import ApiError, error_responses
from services.orchestrator.api.deps import (
    BODY_ERRORS,
    KEY_ERRORS,
    SCOPE_ERRORS,
    AdminDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.audit import note_target
from services.orchestrator.auth import Scope, scope_of
from services.orchestrator.keys import KeyNameTaken, create_key, list_keys, revoke_key

router = APIRouter(
    prefix="/v1/keys",
    tags=["keys"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)


class KeyCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    scope: Scope
    expires_at: AwareDatetime | None = Field(default=None, description="When the key stops working (ISO 8601).")

    @field_validator("name")
    @classmethod
    def _not_env(cls, name: str) -> str:
        if name.startswith("env-"):
            raise ValueError("names starting with 'env-' belong to the keys of COO_API_KEYS")
        return name

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("out of range") from exc
        if value.year > 9000:
            raise ValueError("out of range: before the year 9000, please")
        if value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    scope: Scope
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Last use, to the minute.")


class KeyCreated(BaseModel):
    id: uuid.UUID
    name: str
    scope: Scope
    key: str = Field(description="The key itself: shown only in this answer, stored only as a hash.")
    created_at: datetime
    expires_at: datetime | None


def _out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        name=row.name,
        scope=scope_of(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


@router.post(
    "",
    status_code=201,
    summary="Create an API key with a scope (viewer, operator or admin)",
    responses=responses(
        SCOPE_ERRORS, BODY_ERRORS, error_responses(409, described={409: "A key with this name exists"})
    ),
)
async def create_api_key(body: KeyCreate, state: StateDep, _: AdminDep) -> KeyCreated:
    try:
        made = await create_key(state.sessionmaker, body.name, body.scope, body.expires_at)
    except KeyNameTaken as exc:
        raise ApiError(409, "conflict", str(exc), field="name") from exc
    note_target("key", made.row.id)
    row = made.row
    return KeyCreated(
        id=row.id, name=row.name, scope=body.scope, key=made.raw, created_at=row.created_at, expires_at=row.expires_at
    )


@router.get("", summary="API keys, oldest first (never the keys themselves)", responses=SCOPE_ERRORS)
async def list_api_keys(state: StateDep, _: AdminDep) -> list[KeyOut]:
    return [_out(row) for row in await list_keys(state.reads)]


@router.delete(
    "/{key_id}",
    summary="Revoke an API key: every replica refuses it from now on",
    responses=responses(SCOPE_ERRORS, error_responses(404, described={404: "No such key"})),
)
async def revoke_api_key(key_id: uuid.UUID, state: StateDep, _: AdminDep) -> KeyOut:
    row = await revoke_key(state.sessionmaker, key_id)
    if row is None:
        raise ApiError(404, "not_found", f"API key {key_id} not found", field="id")
    return _out(row)
