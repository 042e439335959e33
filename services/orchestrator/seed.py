"""Seed the agent registry from ``<examples_dir>/agents/*.yaml`` at start-up.

The rule, for each agent file:

- an agent not in the registry is created from its file (version 1);
- an agent whose stored definition is the file's is left as it is;
- an agent whose stored definition differs from the file's is updated from the file (a new version)
  — the file was edited since it was seeded — unless the agent was changed through the API or the
  console: an accepted change of it (``PUT /v1/agents/<name>``, ``coo agents apply``, the console's
  editor) is in the audit trail. Such an agent is the operator's, never overwritten by a file; the
  start-up logs ``agent_seed_skipped`` saying so, and ``coo agents apply <file>`` is how to take
  the file's definition then. (The audit trail is the memory of those changes: an audit row removed
  by ``COO_AUDIT_RETENTION_DAYS`` no longer protects its change.)

A file that cannot be used — not YAML, not a mapping, an unknown or invalid field, an invalid
``output_schema`` — is logged (``agent_file_invalid``, with its path and field) and skipped: the
orchestrator still starts with the others. All replicas may seed at once: creation is an insert that
ignores a name already taken, and updates hold the rows' locks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import Agent, AuditEvent
from services.common.logging import get_logger
from services.orchestrator.reads.catalog import NAME_PATTERN, AgentSpec

log = get_logger(__name__)

_MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class AgentFile:
    path: Path
    name: str
    spec: dict[str, Any]  # every stored field, defaults filled in


class AgentFileError(ValueError):
    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field, self.message = path, field, message


def read_agent_file(path: Path) -> AgentFile:
    """One agent file, checked as ``PUT /v1/agents/{name}`` would check it, or ``AgentFileError``."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AgentFileError(path, "file", f"cannot read it as YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentFileError(path, "file", "must be a mapping of fields (name: …, model: …)")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise AgentFileError(path, "name", "is required (the agent's name)")
    if not re.match(NAME_PATTERN, name):
        raise AgentFileError(path, "name", f"must match {NAME_PATTERN}")
    try:
        spec = AgentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "file"
        raise AgentFileError(path, field, first["msg"]) from exc
    if spec.output_schema is not None:
        try:
            Draft202012Validator.check_schema(spec.output_schema)
        except SchemaError as exc:
            raise AgentFileError(path, "output_schema", exc.message) from exc
    return AgentFile(path, name, spec.model_dump(mode="json"))


def load_agent_files(directory: Path) -> tuple[list[AgentFile], list[AgentFileError]]:
    """The usable agent files of ``directory`` (by file name) and the errors of the others; a name
    given by two files is kept from the first."""
    agents: list[AgentFile] = []
    errors: list[AgentFileError] = []
    if not directory.is_dir():
        return agents, errors
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            agent = read_agent_file(path)
        except AgentFileError as exc:
            errors.append(exc)
            continue
        if agent.name in seen:
            errors.append(AgentFileError(path, "name", f"'{agent.name}' is already defined by {seen[agent.name]}"))
            continue
        seen[agent.name] = path
        agents.append(agent)
    return agents, errors


def stored_spec(row: Agent) -> dict[str, Any]:
    """What the registry holds of an agent, in the form a file's spec takes."""
    return AgentSpec.model_validate(row, from_attributes=True).model_dump(mode="json")


def changed_fields(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [field for field in wanted if stored.get(field) != wanted[field]]


async def seed_agents(sessionmaker: async_sessionmaker[AsyncSession], directory: Path) -> int:
    """Create or update the registry's agents from their files (see the module's rule); the number
    of agents created or updated."""
    agents, errors = load_agent_files(directory)
    for error in errors:
        log.error("agent_file_invalid", path=str(error.path), field=error.field, error=error.message)
    if not agents:
        return 0
    by_name = {agent.name: agent for agent in agents}
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            insert(Agent)
            .values([{"name": agent.name, "version": 1, **agent.spec} for agent in agents])
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(Agent.name)
        )
        created = set(result.scalars())
        existing = (
            await session.execute(
                select(Agent).where(Agent.name.in_(set(by_name) - created)).order_by(Agent.name).with_for_update()
            )
        ).scalars()
        updated: dict[str, list[str]] = {}
        skipped: dict[str, list[str]] = {}
        rows = list(existing)
        operated = await _changed_through_the_api(session, [row.name for row in rows])
        for row in rows:
            agent = by_name[row.name]
            fields = changed_fields(stored_spec(row), agent.spec)
            if not fields:
                continue
            if row.name in operated:
                skipped[row.name] = fields
                continue
            for field in fields:
                setattr(row, field, agent.spec[field])
            row.version += 1
            updated[row.name] = fields
    if created:
        log.info("agents_seeded", agents=sorted(created), source=str(directory))
    for name, fields in updated.items():
        log.info("agent_seed_updated", agent=name, path=str(by_name[name].path), fields=fields)
    for name, fields in skipped.items():
        log.warning(
            "agent_seed_skipped",
            agent=name,
            path=str(by_name[name].path),
            fields=fields,
            reason="changed through the API since it was seeded; `coo agents apply` the file to take its definition",
        )
    return len(created) + len(updated)


async def _changed_through_the_api(session: AsyncSession, names: list[str]) -> set[str]:
    """The agents among ``names`` with an accepted change in the audit trail."""
    if not names:
        return set()
    targets = {f"agent:{name}": name for name in names}
    found = await session.execute(
        select(AuditEvent.target)
        .where(AuditEvent.target.in_(list(targets)), AuditEvent.method.in_(_MUTATING), AuditEvent.outcome < 400)
        .distinct()
    )
    return {targets[target] for target in found.scalars() if target in targets}
