"""Alembic environment: async engine, COO's schema, one history."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db.models import Base
from services.common.db.roles import sync_grants
from services.common.db.session import create_engine
from services.common.settings import Settings, get_settings

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else get_settings()


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    del obj, reflected, compare_to
    return not (type_ == "table" and name == "alembic_version")


def _run(connection: Connection, schema: str, role_prefix: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema,
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
        # The service roles (`coo db roles`) get the privileges of roles.GRANTS on what the
        # migrations created, in the same transaction.
        sync_grants(connection, schema, role_prefix)


async def _run_async() -> None:
    settings = _settings()
    engine = create_engine(settings, application_name="coo-migrate")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"'))
            await conn.commit()
            await conn.run_sync(_run, settings.db_schema, settings.db_role_prefix)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_settings().database_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
