"""An agent's definition checked before its run, and its final message read as its output."""

from __future__ import annotations

from typing import Any

import orjson
from jsonschema import Draft202012Validator

from services.common.errors import CooError, ErrorType
from services.worker.gate import AgentDefinition


def usable(name: str, agent: AgentDefinition | None) -> AgentDefinition:
    """The agent an item names, if it is registered and enabled."""
    if agent is None:
        raise CooError(ErrorType.VALIDATION, f"agent '{name}' is not registered")
    if not agent.enabled:
        raise CooError(ErrorType.VALIDATION, f"agent '{name}' is disabled")
    return agent


def parse_output(text: str) -> dict[str, Any]:
    """The agent's final message: a JSON object (possibly fenced), else the text itself."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else stripped
    try:
        data = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return {"text": text}
    return data if isinstance(data, dict) else {"value": data}


def check_output(agent: AgentDefinition, output: dict[str, Any]) -> None:
    """Raise ``OUTPUT_INVALID`` naming the first place ``output`` breaks the agent's ``output_schema``."""
    if agent.output_schema is None:
        return
    errors = sorted(Draft202012Validator(agent.output_schema).iter_errors(output), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/" + "/".join(str(p) for p in first.absolute_path)
        raise CooError(
            ErrorType.OUTPUT_INVALID,
            f"output does not match agent '{agent.name}' output_schema at {where}: {first.message}",
        )
