"""Workflow definitions: parsing, validation (with JSON pointers) and DAG order."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from services.common.contracts import CheckKind, check_egress
from services.orchestrator.engine import templates

_ID = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
_ID_RE = re.compile(_ID)


# Numbers and booleans are taken as they are written: "3" is not a count, 1 is not true.
class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=100, strict=True)
    base_s: float = Field(default=1.0, gt=0, le=3600, alias="base", strict=True)
    max_s: float = Field(default=60.0, gt=0, le=86400, alias="max", strict=True)
    jitter: bool = Field(default=True, strict=True)


class Check(BaseModel):
    """A verification command the sandbox runs after the agent (must exit 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0, le=3600, strict=True)
    kind: CheckKind = Field(
        default=CheckKind.CUSTOM,
        description="test, lint, typecheck, build or custom: a failing check fails the attempt with "
        "TEST_FAILED, LINT_FAILED, TYPECHECK_FAILED, BUILD_FAILED or VERIFICATION_FAILED",
    )


class StepDefinition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(pattern=_ID)
    agent: str = Field(min_length=1, max_length=100)
    input: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float = Field(default=600.0, gt=0, le=86400, strict=True)
    when: str | None = None
    checks: list[Check] = Field(default_factory=list)
    max_iterations: int = Field(
        default=1,
        ge=1,
        le=20,
        strict=True,
        description="When the checks fail, run the agent again in the same workspace with the verification "
        "report, up to this many times in one attempt",
    )
    egress: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="host:port patterns the step's commands may reach through the sandbox's proxy "
        "(within COO_SANDBOX_EGRESS_ALLOW); empty: no network.",
    )

    @field_validator("egress")
    @classmethod
    def _check_egress(cls, egress: list[str]) -> list[str]:
        return check_egress(egress)

    @field_validator("max_iterations")
    @classmethod
    def _iterations_need_checks(cls, max_iterations: int, info: ValidationInfo) -> int:
        if max_iterations > 1 and not info.data.get("checks"):
            raise ValueError("max_iterations above 1 needs checks: iterations run while the checks fail")
        return max_iterations


class WorkflowDefinition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_ID)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    steps: list[StepDefinition] = Field(min_length=1, max_length=1000)

    def step(self, key: str) -> StepDefinition:
        for step in self.steps:
            if step.id == key:
                return step
        raise KeyError(key)


class DefinitionError(ValueError):
    """A workflow definition is invalid; ``pointer`` is a JSON pointer to the offending field."""

    def __init__(self, message: str, pointer: str) -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer


def _pointer(loc: Iterable[Any]) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in loc)


def _walk_strings(value: Any, loc: tuple[Any, ...]) -> Iterable[tuple[str, tuple[Any, ...]]]:
    if isinstance(value, str):
        yield value, loc
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk_strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, (*loc, index))


def parse_definition(raw: Mapping[str, Any], *, known_agents: set[str] | None = None) -> WorkflowDefinition:
    """Validate a workflow definition; raise ``DefinitionError`` naming the first bad field."""
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DefinitionError(first["msg"], _pointer(first["loc"])) from exc

    if definition.input_schema is not None:
        try:
            Draft202012Validator.check_schema(definition.input_schema)
        except SchemaError as exc:
            raise DefinitionError(f"not a valid JSON Schema: {exc.message}", "/input_schema") from exc

    index: dict[str, int] = {}
    for i, step in enumerate(definition.steps):
        if step.id in index:
            raise DefinitionError(f"duplicate step id '{step.id}'", f"/steps/{i}/id")
        index[step.id] = i

    for i, step in enumerate(definition.steps):
        if known_agents is not None and step.agent not in known_agents:
            raise DefinitionError(f"unknown agent '{step.agent}'", f"/steps/{i}/agent")
        for j, dep in enumerate(step.depends_on):
            if dep == step.id:
                raise DefinitionError(f"step '{step.id}' depends on itself", f"/steps/{i}/depends_on/{j}")
            if dep not in index:
                raise DefinitionError(f"unknown step '{dep}' in depends_on", f"/steps/{i}/depends_on/{j}")

    graph = {step.id: set(step.depends_on) for step in definition.steps}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = list(exc.args[1])
        first = cycle[0]
        raise DefinitionError("dependency cycle: " + " -> ".join(cycle), f"/steps/{index[first]}/depends_on") from exc
    upstream = ancestors(definition)
    for i, step in enumerate(definition.steps):
        _check_templates(step, i, index, upstream[step.id])
    return definition


def _check_templates(step: StepDefinition, i: int, index: Mapping[str, int], upstream: set[str]) -> None:
    sources = list(_walk_strings(step.input, ("input",)))
    if step.when is not None:
        sources.append((step.when if templates.is_template(step.when) else "{{ (" + step.when + ") }}", ("when",)))
    for text, loc in sources:
        if not templates.is_template(text):
            continue
        pointer = _pointer(("steps", i, *loc))
        try:
            templates.check_syntax(text)
        except ValueError as exc:
            raise DefinitionError(str(exc), pointer) from exc
        for ref in templates.referenced_steps(text):
            if ref not in index:
                raise DefinitionError(f"template refers to unknown step '{ref}'", pointer)
            if ref == step.id:
                raise DefinitionError(f"step '{step.id}' refers to its own output", pointer)
            if ref not in upstream:
                raise DefinitionError(
                    f"template reads step '{ref}' but '{step.id}' does not depend on it (add it to depends_on)",
                    pointer,
                )


def ancestors(definition: WorkflowDefinition) -> dict[str, set[str]]:
    """Every step's transitive dependencies."""
    graph = {step.id: set(step.depends_on) for step in definition.steps}
    result: dict[str, set[str]] = {}
    for key in TopologicalSorter(graph).static_order():
        found: set[str] = set()
        for dep in graph[key]:
            found.add(dep)
            found |= result[dep]
        result[key] = found
    return result


def leaves(definition: WorkflowDefinition) -> list[str]:
    """Steps nothing depends on: their outputs form the mission's output."""
    needed = {dep for step in definition.steps for dep in step.depends_on}
    return [step.id for step in definition.steps if step.id not in needed]
