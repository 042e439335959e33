"""Seed the agent registry from ``<examples_dir>/agents/*.yaml`` (only agents not yet defined)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import Agent
from services.common.logging import get_logger

log = get_logger(__name__)

_FIELDS = {"description", "model", "system_prompt", "tools", "approval_policy", "output_schema", "enabled"}


def load_agent_files(directory: Path) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    if not directory.is_dir():
        return agents
    for path in sorted(directory.glob("*.y*ml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or "name" not in data or "model" not in data:
            raise ValueError(f"{path}: an agent file needs at least 'name' and 'model'")
        unknown = set(data) - _FIELDS - {"name"}
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        if data.get("approval_policy", "auto") not in ("auto", "approval_required"):
            raise ValueError(f"{path}: approval_policy must be 'auto' or 'approval_required'")
        agents.append(data)
    return agents


# Every row of one multi-row INSERT must name the same columns.
_DEFAULTS: dict[str, object] = {
    "version": 1,
    "description": "",
    "system_prompt": "",
    "tools": [],
    "approval_policy": "auto",
    "output_schema": None,
    "enabled": True,
}


async def seed_agents(sessionmaker: async_sessionmaker[AsyncSession], directory: Path) -> int:
    agents = load_agent_files(directory)
    if not agents:
        return 0
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            insert(Agent)
            .values([{**_DEFAULTS, **a} for a in agents])
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Agent.name)
        )
        created = list(result.scalars())
    if created:
        log.info("agents_seeded", agents=created, source=str(directory))
    return len(created)
