"""Stored API keys: create (the raw key is returned once, only its hash is kept), list, revoke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import ApiKey
from services.orchestrator.auth import Scope, hash_key, new_key


class KeyNameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"an API key named '{name}' exists already")
        self.name = name


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    raw: str


async def create_key(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, scope: Scope, expires_at: datetime | None
) -> NewKey:
    """A new key with ``scope``; KeyNameTaken when the name is in use (revoked keys keep theirs)."""
    raw = new_key()
    row = ApiKey(id=uuid.uuid4(), name=name, hash=hash_key(raw), scopes=[str(scope)], expires_at=expires_at)
    try:
        async with sessionmaker() as session, session.begin():
            session.add(row)
            await session.flush()
            await session.refresh(row)
    except IntegrityError as exc:
        raise KeyNameTaken(name) from exc
    return NewKey(row=row, raw=raw)


async def list_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> list[ApiKey]:
    async with sessionmaker() as session:
        return list((await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))).scalars())


async def find_key(sessionmaker: async_sessionmaker[AsyncSession], id_or_name: str) -> ApiKey | None:
    """A key by id, or else by name."""
    async with sessionmaker() as session:
        try:
            found = await session.get(ApiKey, uuid.UUID(id_or_name))
        except ValueError:
            found = None
        if found is None:
            found = (await session.execute(select(ApiKey).where(ApiKey.name == id_or_name))).scalar_one_or_none()
        return found


async def revoke_key(sessionmaker: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> ApiKey | None:
    """Revoke a key now (a revoked key stays revoked, with its first revocation time); None if unknown."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.clock_timestamp())
            .execution_options(synchronize_session=False)
        )
        return (await session.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one_or_none()
