"""What every service opens at start-up: Postgres (migrated to this release) and NATS."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.bus import Bus
from services.common.db.migrate import alembic_config
from services.common.db.session import create_engine, create_sessionmaker, ping
from services.common.logging import get_logger
from services.common.resources import ServiceResources
from services.common.scrub import scrub_text
from services.common.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Infra:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus


async def wait_for_postgres(engine: AsyncEngine, settings: Settings) -> None:
    """Postgres may start after us (compose, Kubernetes): retry, then fail naming the setting."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + settings.startup_timeout_s
    delay = 0.2
    while True:
        try:
            await ping(engine, timeout_s=min(5.0, settings.startup_timeout_s))
            return
        except (OSError, DBAPIError, TimeoutError) as exc:
            if loop.time() >= give_up:
                where = scrub_text(settings.database_url or "")
                raise RuntimeError(f"cannot reach Postgres at {where} (COO_DATABASE_URL): {exc}") from exc
            log.warning("postgres_unreachable", retry_in_s=delay, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def check_migrated(engine: AsyncEngine, settings: Settings) -> list[str]:
    """Refuse to start on a schema older (or newer) than this release, with the command that fixes it;
    the revision(s) it is at otherwise."""
    expected = set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
    async with engine.connect() as conn:
        current: set[str]
        try:
            current = set((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
        except DBAPIError:
            current = set()
    if current != expected:
        raise RuntimeError(
            f"database schema '{settings.db_schema}' is at {sorted(current) or 'no revision'}, "
            f"this release needs {sorted(expected)}: run `coo db upgrade`"
        )
    return sorted(current)


async def wait_until_migrated(settings: Settings, *, timeout_s: float, interval_s: float = 2.0) -> str:
    """Wait until Postgres answers with the schema this release needs (``coo db wait``); return its
    revision, or raise ``TimeoutError`` naming what was seen last."""
    engine = create_engine(settings, application_name="coo-db-wait", pool_size=1)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    last = "nothing yet"
    try:
        while True:
            try:
                await ping(engine, timeout_s=5.0)
                return ", ".join(await check_migrated(engine, settings))
            except RuntimeError as exc:
                last = str(exc)
            except (OSError, DBAPIError, TimeoutError) as exc:
                last = f"Postgres unreachable: {scrub_text(str(exc))}"
            if loop.time() >= give_up:
                raise TimeoutError(f"the database is not migrated after {timeout_s:g}s: {last}")
            log.info("waiting_for_migrations", detail=last)
            await asyncio.sleep(interval_s)
    finally:
        await engine.dispose()


async def open_infra(
    stack: AsyncExitStack,
    settings: Settings,
    *,
    client_name: str,
    resources: ServiceResources,
    pool_size: int | None = None,
) -> Infra:
    """Open Postgres and NATS for a service's lifespan; ``stack`` closes them. ``resources`` gets
    ``engine`` and ``bus`` for the readiness checks and the pool metrics, each as soon as it is open."""
    engine = create_engine(settings, application_name=client_name.split(":")[0], pool_size=pool_size)
    stack.push_async_callback(engine.dispose)
    await wait_for_postgres(engine, settings)
    await check_migrated(engine, settings)
    resources.engine = engine
    bus = Bus(settings, client_name=client_name)
    await bus.connect(deadline_s=settings.startup_timeout_s)
    stack.push_async_callback(bus.close)
    resources.bus = bus
    await bus.ensure_streams()
    return Infra(engine, create_sessionmaker(engine), bus)
