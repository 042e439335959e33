"""Bearer API keys: from ``COO_API_KEYS`` or the ``api_keys`` table (stored as SHA-256)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import ApiKey
from services.common.settings import Settings


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name (never the key itself)."""

    name: str
    scopes: tuple[str, ...] = ("*",)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_key() -> str:
    return "coo_" + secrets.token_urlsafe(32)


class KeyStore:
    """Checks keys; database keys are cached briefly so that a revocation lands within seconds."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], ttl_s: float = 5.0) -> None:
        self._static = {
            hash_key(k.get_secret_value()): f"env-{hash_key(k.get_secret_value())[:8]}" for k in settings.api_keys
        }
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def authenticate(self, raw: str) -> Caller | None:
        digest = hash_key(raw)
        for known, name in self._static.items():
            if hmac.compare_digest(known, digest):
                return Caller(name=name)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._sessionmaker() as session:
            row = (
                await session.execute(select(ApiKey).where(ApiKey.hash == digest, ApiKey.revoked_at.is_(None)))
            ).scalar_one_or_none()
        caller = Caller(name=row.name, scopes=tuple(row.scopes or ["*"])) if row is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl_s, caller)
        return caller
