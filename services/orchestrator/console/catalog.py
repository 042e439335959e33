"""Console pages of definitions and of what needs attention: agents, workflows (with a form to
submit a mission), dead letters and alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.orchestrator.console.graph import CycleError, GraphStep, Layout, layout
from services.orchestrator.console.web import ConsoleError, OperatorDep, refusal_page, render, render_page
from services.orchestrator.errors import OrchestratorError
from services.orchestrator.reads.alerts import find_alerts
from services.orchestrator.reads.catalog import latest_workflows, read_agents, read_workflow
from services.orchestrator.reads.dlq import find_dead_letters
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)

LIST_LIMIT = 100


@router.get("/console/agents", response_class=HTMLResponse)
async def agents_page(request: Request, operator: OperatorDep, saved: str = "") -> HTMLResponse:
    agents = await read_agents(state_of(request))
    just_saved = next((a for a in agents if a.name == saved), None)  # back from the agent editor
    return await render_page(request, "agents.html", {"agents": agents, "saved": just_saved}, operator=operator)


@router.get("/console/workflows", response_class=HTMLResponse)
async def workflows_page(request: Request, operator: OperatorDep) -> HTMLResponse:
    workflows = await latest_workflows(state_of(request))
    return await render_page(request, "workflows.html", {"workflows": workflows}, operator=operator)


def _example_input(definition: dict[str, Any]) -> str:
    """A starting point for the submit form: the input schema's required fields, empty."""
    schema = definition.get("input_schema") or {}
    required = schema.get("required") or []
    if not required:
        return "{}"
    fields = ", ".join(f'"{name}": ""' for name in required)
    return "{" + fields + "}"


@router.get("/console/workflows/{name}", response_class=HTMLResponse)
async def workflow_page(
    request: Request, name: str, operator: OperatorDep, version: str = "", saved: str = ""
) -> HTMLResponse:
    chosen = int(version) if version.isdigit() and 0 < int(version) < 2**31 else None
    if version and chosen is None:
        raise ConsoleError(404, f"workflow '{name}' version '{version}' not found", title="Not found")
    try:
        workflow = await read_workflow(state_of(request), name, chosen)
        latest = workflow if chosen is None else await read_workflow(state_of(request), name, None)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    steps = workflow.definition.get("steps") or []
    nodes = [GraphStep(str(s["id"]), tuple(s.get("depends_on") or ()), str(s.get("agent", ""))) for s in steps]
    try:
        graphs: tuple[Layout, Layout] | None = (layout(nodes), layout(nodes, vertical=True))
    except CycleError:
        graphs = None
    context = {
        "workflow": workflow,
        "steps": steps,
        "graphs": graphs,
        "example_input": _example_input(workflow.definition),
        "latest_version": latest.version,
        "versions": list(range(latest.version, 0, -1)),  # versions are numbered 1, 2, … with no gap
        "saved": bool(saved),  # back from the editor: this version was just registered
    }
    return await render_page(request, "workflow.html", context, operator=operator)


async def _letters(request: Request, show: str) -> dict[str, Any]:
    replayed = {"pending": False, "replayed": True}.get(show)
    page = await find_dead_letters(state_of(request), mission_id=None, replayed=replayed, limit=LIST_LIMIT, cursor=None)
    return {"letters": page.items, "more": page.next_cursor is not None, "show": show if replayed is not None else ""}


@router.get("/console/dlq", response_class=HTMLResponse)
async def dlq_page(request: Request, operator: OperatorDep, show: str = "") -> HTMLResponse:
    return await render_page(request, "dlq.html", await _letters(request, show), operator=operator)


@router.get("/console/dlq/table", response_class=HTMLResponse)
async def dlq_table(request: Request, operator: OperatorDep, show: str = "") -> HTMLResponse:
    return render(request, "_dlq_table.html", await _letters(request, show), operator=operator)


async def _alerts(request: Request, status: str) -> dict[str, Any]:
    chosen = status if status in ("firing", "resolved") else None
    alerts = await find_alerts(state_of(request), status=chosen, alertname=None, limit=LIST_LIMIT)
    return {"alerts": alerts, "status": chosen or ""}


@router.get("/console/alerts", response_class=HTMLResponse)
async def alerts_page(request: Request, operator: OperatorDep, status: str = "") -> HTMLResponse:
    return await render_page(request, "alerts.html", await _alerts(request, status), operator=operator)


@router.get("/console/alerts/table", response_class=HTMLResponse)
async def alerts_table(request: Request, operator: OperatorDep, status: str = "") -> HTMLResponse:
    return render(request, "_alerts_table.html", await _alerts(request, status), operator=operator)
