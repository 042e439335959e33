"""A replica remembers a stored key it found valid for ``CACHE_TTL_S``: a revocation through the same
replica is seen at once, one made elsewhere once the memory lapses; bad keys are never remembered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.session import create_engine, create_sessionmaker
from services.common.settings import Settings
from services.orchestrator import auth
from services.orchestrator.auth import KeyStore, Scope
from services.orchestrator.keys import create_key, revoke_key
from tests.conftest import wait_for


@pytest.fixture
async def replicas(
    settings: Settings,
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]]:
    """Two replicas' sessionmakers, each on its own engine."""
    here = create_engine(settings, application_name="coo-key-cache-a", pool_size=2)
    there = create_engine(settings, application_name="coo-key-cache-b", pool_size=2)
    try:
        yield create_sessionmaker(here), create_sessionmaker(there)
    finally:
        await here.dispose()
        await there.dispose()


async def test_a_revocation_through_this_replica_is_seen_at_once(
    settings: Settings,
    replicas: tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CACHE_TTL_S", 3600.0)  # remembered for the whole test unless forgotten
    here, _ = replicas
    engine = here.kw["bind"]
    keys = KeyStore(settings, async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT")))  # as state.py
    made = await create_key(here, "ci", Scope.OPERATOR, None)
    caller = await keys.authenticate(made.raw)
    assert caller is not None and caller.name == "ci" and caller.scope is Scope.OPERATOR
    assert await keys.authenticate(made.raw) == caller

    await revoke_key(here, made.row.id)
    assert await keys.authenticate(made.raw) is None


async def test_a_revocation_elsewhere_is_seen_once_the_memory_lapses(
    settings: Settings,
    replicas: tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CACHE_TTL_S", 3600.0)
    here, there = replicas
    keys = KeyStore(settings, here)
    made = await create_key(there, "leaked", Scope.VIEWER, None)
    assert await keys.authenticate(made.raw) is not None
    await revoke_key(there, made.row.id)
    assert await keys.authenticate(made.raw) is not None  # remembered: the documented window

    monkeypatch.setattr(auth, "CACHE_TTL_S", 0.0)
    keys = KeyStore(settings, here)  # nothing remembered (as after CACHE_TTL_S)
    assert await keys.authenticate(made.raw) is None
    assert await keys.authenticate(made.raw) is None  # and a refused key is not remembered either


async def test_an_expiring_key_is_not_remembered_past_its_expiry(
    settings: Settings,
    replicas: tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CACHE_TTL_S", 3600.0)
    here, _ = replicas
    keys = KeyStore(settings, here)
    made = await create_key(here, "brief", Scope.VIEWER, datetime.now(UTC) + timedelta(seconds=1.5))
    assert await keys.authenticate(made.raw) is not None

    async def refused() -> bool:
        return await keys.authenticate(made.raw) is None

    await wait_for(refused, timeout_s=10, interval_s=0.1, what="the key to expire")
