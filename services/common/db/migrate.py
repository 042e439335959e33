"""Run alembic migrations from code (``coo db upgrade``, ``coo up``, tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from services.common.settings import Settings

_HERE = Path(__file__).resolve().parent


def alembic_config(settings: Settings) -> Config:
    config = Config(str(_HERE / "alembic.ini"))
    config.set_main_option("script_location", str(_HERE / "migrations"))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the configured schema to ``revision`` (blocking; runs its own event loop)."""
    settings.require_infra()
    command.upgrade(alembic_config(settings), revision)


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, settings, revision)
