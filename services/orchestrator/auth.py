"""Bearer API keys and their scopes: from ``COO_API_KEYS`` (admin) or the ``api_keys`` table
(stored as SHA-256).

A database key is looked up on every request, so a revoked or expired key is refused by every
replica as soon as the revocation commits (or the expiry passes on the database's clock).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import ApiKey
from services.common.settings import Settings

TOUCH_EVERY_S = 60  # last_used_at is kept to the minute: one write per key per minute at most


class Scope(enum.StrEnum):
    """What a key may do; each scope includes the ones below it."""

    VIEWER = "viewer"  # read everything
    OPERATOR = "operator"  # and submit missions, pause/resume/cancel, approve/reject, replay dead letters
    ADMIN = "admin"  # and manage keys, agents and workflows

    @property
    def rank(self) -> int:
        return list(Scope).index(self)  # the order above

    def allows(self, needed: Scope) -> bool:
        return self.rank >= needed.rank


def scope_of(stored: Collection[Any]) -> Scope:
    """The scope a key's stored ``scopes`` list grants: the highest one it names (viewer if none).
    ``*`` is what keys were given before scopes existed: they could do everything, and still can."""
    if "*" in stored:
        return Scope.ADMIN
    known = [Scope(s) for s in stored if s in Scope._value2member_map_]
    return max(known, key=lambda s: s.rank, default=Scope.VIEWER)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name (never the key itself), its scope and, for a stored key, its id."""

    name: str
    scope: Scope = Scope.ADMIN
    key_id: uuid.UUID | None = None

    def can(self, needed: Scope) -> bool:
        return self.scope.allows(needed)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_key() -> str:
    return "coo_" + secrets.token_urlsafe(32)


class KeyStore:
    """Checks keys: ``COO_API_KEYS`` in memory, stored keys in the database on every call."""

    def __init__(self, settings: Settings, reads: async_sessionmaker[AsyncSession]) -> None:
        self._static = {
            hash_key(k.get_secret_value()): f"env-{hash_key(k.get_secret_value())[:8]}" for k in settings.api_keys
        }
        self._reads = reads

    async def authenticate(self, raw: str) -> Caller | None:
        """The caller a key belongs to; None for an unknown, revoked or expired key."""
        digest = hash_key(raw)
        for known, name in self._static.items():
            if hmac.compare_digest(known, digest):
                return Caller(name=name, scope=Scope.ADMIN)
        now = func.clock_timestamp()
        stale = or_(
            ApiKey.last_used_at.is_(None),
            ApiKey.last_used_at < now - func.make_interval(0, 0, 0, 0, 0, 0, TOUCH_EVERY_S),
        )
        async with self._reads() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.name, ApiKey.scopes, stale.label("stale")).where(
                        ApiKey.hash == digest,
                        ApiKey.revoked_at.is_(None),
                        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            if row.stale:
                await session.execute(
                    update(ApiKey)
                    .where(and_(ApiKey.id == row.id, stale))
                    .values(last_used_at=now)
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        return Caller(name=row.name, scope=scope_of(row.scopes or []), key_id=row.id)
