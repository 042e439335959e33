"""Async engine and sessions (SQLAlchemy 2 + asyncpg), bound to the configured schema."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from services.common.runtime_metrics import CountingPool
from services.common.settings import Settings


def create_engine(settings: Settings, *, application_name: str, pool_size: int | None = None) -> AsyncEngine:
    url, _ = settings.require_infra()
    size = pool_size or settings.db_pool_size
    overflow = settings.db_max_overflow if settings.db_max_overflow is not None else size
    connect_args: dict[str, Any] = {
        "timeout": 5,
        "command_timeout": 60,
        # Batches give statements of many shapes (IN lists, multi-row inserts): keep their plans.
        "prepared_statement_cache_size": 1024,
        "server_settings": {"search_path": settings.db_schema, "application_name": application_name},
    }
    if settings.database_password is not None:  # kept out of the URL (COO_DATABASE_PASSWORD)
        connect_args["password"] = settings.database_password.get_secret_value()
    if settings.db_pgbouncer:
        # In transaction mode consecutive statements may reach different server connections: a
        # prepared statement must not be reused, nor its name collide with another client's. Nor can
        # a session setting stick: PgBouncer refuses search_path at connect, so the schema comes from
        # PgBouncer's connect_query or the role's own search_path (docs/deploy.md).
        connect_args |= {
            "prepared_statement_cache_size": 0,
            "statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__coo_{uuid.uuid4().hex}__",
            "server_settings": {"application_name": application_name},
        }
    return create_async_engine(
        url,
        poolclass=CountingPool,  # counts the requests waiting for a connection (coo_db_pool_connections)
        pool_size=size,
        max_overflow=overflow,
        hide_parameters=True,
        # No ping per checkout (a round trip each time): a dropped connection fails one operation,
        # and SQLAlchemy then refreshes the whole pool.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, *, timeout_s: float = 2.0) -> None:
    """Raise if Postgres does not answer ``SELECT 1`` within the deadline."""
    async with asyncio.timeout(timeout_s):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
