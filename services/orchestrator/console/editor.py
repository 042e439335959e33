"""Console pages that change the catalog: a workflow written or edited as YAML and saved as its
next version, a diff between two versions, and an agent written or edited as YAML. Saving takes the
REST API's path (``register_workflow``, ``put_agent``) and its scope (admin); what it refuses is
shown next to the editor at the field's JSON pointer (and its line), with the text kept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.orchestrator.audit import note_target
from services.orchestrator.commands.catalog import put_agent, register_workflow
from services.orchestrator.console.web import (
    ConsoleError,
    DefinerDep,
    FormDep,
    OperatorDep,
    refusal_page,
    render_page,
)
from services.orchestrator.console.yaml_source import YamlProblem, line_of, parse_mapping, to_yaml, unified_diff
from services.orchestrator.errors import NotFound, OrchestratorError
from services.orchestrator.reads.catalog import (
    NAME_PATTERN,
    AgentOut,
    AgentSpec,
    WorkflowOut,
    read_agent,
    read_workflow,
)
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)

STARTER_WORKFLOW = """\
name: my-workflow
description: What this workflow does.
steps:
  - id: count
    agent: line-counter
    input:
      text: "{{ input.text }}"
"""
STARTER_AGENT = """\
model: offline
description: What this agent does.
system_prompt: |
  You are …
tools: []
approval_policy: auto
output_schema: null
enabled: true
"""
# The agent fields in the order the editor shows them (the name is the page's, not the text's).
AGENT_FIELDS = ("model", "description", "system_prompt", "tools", "approval_policy", "output_schema", "enabled")


@dataclass(frozen=True)
class Problem:
    """Something wrong with the text: where (a JSON pointer, and its line when known) and what."""

    pointer: str
    message: str
    line: int | None = None
    column: int | None = None


def _as_pointer(field: str | None) -> str:
    """A field as the commands name it (``/steps/0/agent``, ``output_schema``, ``body.steps[0].id``)
    as a JSON pointer into the text."""
    if not field or field == "body":
        return ""
    if field.startswith("/"):
        return field
    field = re.sub(r"^body\.?", "", field)
    return "/" + "/".join(part for part in re.split(r"[.\[\]]+", field) if part)


def _problem(text: str, pointer: str, message: str) -> Problem:
    prefix = f"{pointer}: "
    message = message[len(prefix) :] if pointer and message.startswith(prefix) else message
    return Problem(pointer or "/", message, line_of(text, pointer))


def _parse(text: str, what: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        return parse_mapping(text, what), []
    except YamlProblem as exc:
        return None, [Problem("/", exc.message, exc.line, exc.column)]


def _version(value: str, what: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise ConsoleError(404, f"{what} version '{value}' not found", title="Not found")
    return int(value)


async def _workflow(request: Request, name: str, version: int | None) -> WorkflowOut:
    try:
        return await read_workflow(state_of(request), name, version)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc


# Workflows ---------------------------------------------------------------------------------------


async def _workflow_editor(
    request: Request,
    operator: DefinerDep,
    *,
    name: str | None,
    text: str,
    problems: list[Problem],
    base_version: int | None = None,
) -> HTMLResponse:
    context = {"name": name, "text": text, "problems": problems, "base_version": base_version}
    status = 422 if problems else 200
    return await render_page(request, "workflow_edit.html", context, operator=operator, status=status)


@router.get("/console/workflows/new", response_class=HTMLResponse)
async def new_workflow_page(request: Request, operator: DefinerDep) -> HTMLResponse:
    return await _workflow_editor(request, operator, name=None, text=STARTER_WORKFLOW, problems=[])


@router.get("/console/workflows/{name}/edit", response_class=HTMLResponse)
async def edit_workflow_page(request: Request, name: str, operator: DefinerDep, version: str = "") -> HTMLResponse:
    workflow = await _workflow(request, name, _version(version, f"workflow '{name}'"))
    text = to_yaml(workflow.definition)
    return await _workflow_editor(request, operator, name=name, text=text, problems=[], base_version=workflow.version)


async def _save_workflow(request: Request, operator: DefinerDep, form: dict[str, str], name: str | None) -> Response:
    text = form.get("definition", "")
    data, problems = _parse(text, "workflow definition")
    if data is not None:
        problems = await _workflow_name_problems(request, text, data, name)
    if data is None or problems:
        return await _workflow_editor(request, operator, name=name, text=text, problems=problems)
    try:
        saved = await register_workflow(state_of(request), data)
    except OrchestratorError as exc:
        pointer = _as_pointer(exc.field)
        return await _workflow_editor(
            request, operator, name=name, text=text, problems=[_problem(text, pointer, exc.message)]
        )
    note_target("workflow", saved.name)
    target = f"/console/workflows/{quote(saved.name, safe='')}?version={saved.version}&saved=1"
    return RedirectResponse(target, status_code=303)


async def _workflow_name_problems(request: Request, text: str, data: dict[str, Any], name: str | None) -> list[Problem]:
    """An edit saves a version of its own workflow; "new" does not add a version to one that exists."""
    given = data.get("name")
    if name is not None and isinstance(given, str) and given != name:
        message = f"this page saves versions of '{name}'; to make a workflow named '{given}', use New workflow"
        return [_problem(text, "/name", message)]
    if name is None and isinstance(given, str) and given:
        try:
            existing = await read_workflow(state_of(request), given, None)
        except NotFound:
            return []
        message = f"workflow '{given}' exists (v{existing.version}): edit it to save a new version"
        return [_problem(text, "/name", message)]
    return []


@router.post("/console/workflows/new")
async def create_workflow(request: Request, operator: DefinerDep, form: FormDep) -> Response:
    return await _save_workflow(request, operator, form, None)


@router.post("/console/workflows/{name}/edit")
async def update_workflow(request: Request, name: str, operator: DefinerDep, form: FormDep) -> Response:
    return await _save_workflow(request, operator, form, name)


@router.get("/console/workflows/{name}/diff", response_class=HTMLResponse)
async def workflow_diff_page(request: Request, name: str, operator: OperatorDep) -> HTMLResponse:
    latest = await _workflow(request, name, None)
    params = request.query_params
    after_version = _version(params.get("to", ""), f"workflow '{name}'") or latest.version
    before_version = _version(params.get("from", ""), f"workflow '{name}'") or max(1, after_version - 1)
    before = await _workflow(request, name, before_version)
    after = latest if after_version == latest.version else await _workflow(request, name, after_version)
    lines = unified_diff(
        to_yaml(before.definition), to_yaml(after.definition), f"{name} v{before.version}", f"{name} v{after.version}"
    )
    context = {
        "workflow": latest,
        "before": before,
        "after": after,
        "lines": lines,
        "versions": list(range(latest.version, 0, -1)),
    }
    return await render_page(request, "workflow_diff.html", context, operator=operator)


# Agents ------------------------------------------------------------------------------------------


def _agent_text(agent: AgentOut) -> str:
    return to_yaml({field: getattr(agent, field) for field in AGENT_FIELDS})


async def _agent_editor(
    request: Request,
    operator: DefinerDep,
    *,
    name: str | None,
    new_name: str = "",
    text: str,
    problems: list[Problem],
    version: int | None = None,
) -> HTMLResponse:
    context = {
        "name": name,
        "new_name": new_name,
        "text": text,
        "problems": problems,
        "version": version,
        "fields": AGENT_FIELDS,
        "name_pattern": NAME_PATTERN,
    }
    status = 422 if problems else 200
    return await render_page(request, "agent_edit.html", context, operator=operator, status=status)


@router.get("/console/agents/new", response_class=HTMLResponse)
async def new_agent_page(request: Request, operator: DefinerDep) -> HTMLResponse:
    return await _agent_editor(request, operator, name=None, text=STARTER_AGENT, problems=[])


@router.get("/console/agents/{name}/edit", response_class=HTMLResponse)
async def edit_agent_page(request: Request, name: str, operator: DefinerDep) -> HTMLResponse:
    try:
        agent = await read_agent(state_of(request), name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    return await _agent_editor(
        request, operator, name=name, text=_agent_text(agent), problems=[], version=agent.version
    )


def _spec(text: str, data: dict[str, Any], name: str) -> tuple[AgentSpec | None, list[Problem]]:
    fields = dict(data)
    if "name" in fields:  # the name is the page's (or the name field's); saying it again is harmless
        if fields.pop("name") != name:
            return None, [_problem(text, "/name", f"this agent is '{name}': leave the name out, or make it '{name}'")]
    try:
        return AgentSpec.model_validate(fields), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            pointer = "/" + "/".join(str(part) for part in error["loc"]) if error["loc"] else ""
            problems.append(_problem(text, pointer, str(error["msg"])))
        return None, problems


async def _save_agent(request: Request, operator: DefinerDep, form: dict[str, str], name: str | None) -> Response:
    text = form.get("spec", "")
    chosen = name if name is not None else form.get("name", "").strip()
    data, problems = _parse(text, "agent definition")
    if name is None:
        problems = await _new_agent_name_problems(request, chosen) + problems
    spec = None
    if data is not None:
        spec, spec_problems = _spec(text, data, chosen)
        problems += spec_problems
    if spec is None or problems:
        return await _agent_editor(request, operator, name=name, new_name=chosen, text=text, problems=problems)
    try:
        saved = await put_agent(state_of(request), chosen, spec)
    except OrchestratorError as exc:
        pointer = _as_pointer(exc.field)
        on_name_field = pointer == "/name" and name is None
        problem = Problem("name", exc.message) if on_name_field else _problem(text, pointer, exc.message)
        return await _agent_editor(request, operator, name=name, new_name=chosen, text=text, problems=[problem])
    note_target("agent", saved.name)
    return RedirectResponse(f"/console/agents?saved={quote(saved.name, safe='')}#agent-{saved.name}", status_code=303)


async def _new_agent_name_problems(request: Request, chosen: str) -> list[Problem]:
    """The name field of a new agent: given, well formed, and not an agent that exists."""
    if not chosen:
        return [Problem("name", "give the agent a name")]
    if not re.match(NAME_PATTERN, chosen):
        return [Problem("name", "lower-case letters, digits, '-' and '_' only, starting with a letter or digit")]
    try:
        existing = await read_agent(state_of(request), chosen)
    except NotFound:
        return []
    return [Problem("name", f"agent '{chosen}' exists (v{existing.version}): edit it instead")]


@router.post("/console/agents/new")
async def create_agent(request: Request, operator: DefinerDep, form: FormDep) -> Response:
    return await _save_agent(request, operator, form, None)


@router.post("/console/agents/{name}/edit")
async def update_agent(request: Request, name: str, operator: DefinerDep, form: FormDep) -> Response:
    try:
        await read_agent(state_of(request), name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    return await _save_agent(request, operator, form, name)
