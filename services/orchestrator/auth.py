"""Bearer API keys and their scopes: from ``COO_API_KEYS`` (admin) or the ``api_keys`` table
(stored as SHA-256).

A database key found valid is remembered by each replica for ``CACHE_TTL_S`` (or until it expires,
if sooner), so a request usually costs no lookup. A revocation made through this replica (any
UPDATE or DELETE of ``api_keys`` on its engine) empties its memory at once; **other replicas may
still accept a revoked key for up to ``CACHE_TTL_S`` seconds** after the revocation commits. An
unknown, revoked or expired key is never remembered: it is looked up every time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Delete, Update, and_, event, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.db.models import ApiKey
from services.common.settings import Settings

TOUCH_EVERY_S = 60  # last_used_at is kept to the minute: one write per key per minute at most
CACHE_TTL_S = 5.0  # how long a replica remembers a valid stored key (and a revoked one may still work elsewhere)
_CACHE_MAX = 10_000
_QUIET_S = 1.0


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
    """Checks keys: ``COO_API_KEYS`` in memory, stored keys in the database, remembered briefly."""

    def __init__(self, settings: Settings, reads: async_sessionmaker[AsyncSession]) -> None:
        self._static = {
            hash_key(k.get_secret_value()): f"env-{hash_key(k.get_secret_value())[:8]}" for k in settings.api_keys
        }
        self._reads = reads
        self._cache: dict[str, tuple[Caller, float]] = {}  # digest -> (caller, until, on time.monotonic())
        self._generation = 0  # bumped by every change of api_keys made through this process
        # After a change, nothing is remembered for a moment: a lookup that starts after the change's
        # statement but before its commit still reads the key as it was.
        self._quiet_until = 0.0
        bind = reads.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            engine = bind.sync_engine
            while isinstance(engine, OptionEngine):  # reads run on the autocommit copy: watch the engine itself
                engine = engine._proxied
            event.listen(engine, "after_execute", self._on_execute)

    def _on_execute(self, _conn: Connection, statement: Any, *_: Any) -> None:
        """A revocation (or any other change of a key) made in this replica is seen at once."""
        if (
            isinstance(statement, Update | Delete)
            and getattr(statement.table, "name", None) == ApiKey.__tablename__
            and not statement.get_execution_options().get("key_touch")
        ):
            self.forget()

    def forget(self) -> None:
        """Drop every remembered key: the next request of each looks it up again."""
        self._generation += 1
        self._quiet_until = time.monotonic() + _QUIET_S
        self._cache.clear()

    async def authenticate(self, raw: str) -> Caller | None:
        """The caller a key belongs to; None for an unknown, revoked or expired key."""
        digest = hash_key(raw)
        for known, name in self._static.items():
            if hmac.compare_digest(known, digest):
                return Caller(name=name, scope=Scope.ADMIN)
        cached = self._cache.get(digest)
        if cached is not None:
            if time.monotonic() < cached[1]:
                return cached[0]
            del self._cache[digest]
        generation = self._generation
        looked_up = await self._look_up(digest)
        if looked_up is None:
            return None
        caller, expires_at = looked_up
        if generation == self._generation and time.monotonic() >= self._quiet_until:  # no change meanwhile
            until = time.monotonic() + CACHE_TTL_S
            if expires_at is not None:
                until = min(until, time.monotonic() + (expires_at.timestamp() - time.time()))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (caller, until)
        return caller

    async def _look_up(self, digest: str) -> tuple[Caller, datetime | None] | None:
        now = func.clock_timestamp()
        stale = or_(
            ApiKey.last_used_at.is_(None),
            ApiKey.last_used_at < now - func.make_interval(0, 0, 0, 0, 0, 0, TOUCH_EVERY_S),
        )
        async with self._reads() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.name, ApiKey.scopes, ApiKey.expires_at, stale.label("stale")).where(
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
                    .execution_options(synchronize_session=False, key_touch=True)  # not a change of the key
                )
                await session.commit()
        return Caller(name=row.name, scope=scope_of(row.scopes or []), key_id=row.id), row.expires_at
