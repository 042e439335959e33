"""Console pages of what starts missions by itself: schedules (cadence, next fire times, latest fires)
and event triggers (filter, webhook, latest deliveries). Each page calls one read; the list pages
and the detail pages have a live part the page polls (``?part=table``, ``…/live``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.orchestrator.console.web import OperatorDep, refusal_page, render, render_page
from services.orchestrator.errors import OrchestratorError
from services.orchestrator.reads.schedules import list_schedules, read_schedule
from services.orchestrator.reads.triggers import list_triggers, read_trigger
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)

# The list pages' live part is the same path with ?part=table: a schedule or trigger may be named "table".
TABLE_PART = "table"


@router.get("/console/schedules", response_class=HTMLResponse)
async def schedules_page(request: Request, operator: OperatorDep, part: str = "") -> HTMLResponse:
    context = {"schedules": await list_schedules(state_of(request))}
    if part == TABLE_PART:
        return render(request, "_schedules_table.html", context, operator=operator)
    return await render_page(request, "schedules.html", context, operator=operator)


async def _schedule_context(request: Request, name: str) -> dict[str, Any]:
    try:
        schedule = await read_schedule(state_of(request), name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    return {"schedule": schedule}


@router.get("/console/schedules/{name}", response_class=HTMLResponse)
async def schedule_page(request: Request, name: str, operator: OperatorDep) -> HTMLResponse:
    return await render_page(request, "schedule.html", await _schedule_context(request, name), operator=operator)


@router.get("/console/schedules/{name}/live", response_class=HTMLResponse)
async def schedule_live(request: Request, name: str, operator: OperatorDep) -> HTMLResponse:
    return render(request, "_schedule_live.html", await _schedule_context(request, name), operator=operator)


@router.get("/console/triggers", response_class=HTMLResponse)
async def triggers_page(request: Request, operator: OperatorDep, part: str = "") -> HTMLResponse:
    context = {"triggers": await list_triggers(state_of(request))}
    if part == TABLE_PART:
        return render(request, "_triggers_table.html", context, operator=operator)
    return await render_page(request, "triggers.html", context, operator=operator)


async def _trigger_context(request: Request, name: str) -> dict[str, Any]:
    try:
        trigger = await read_trigger(state_of(request), name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    return {"trigger": trigger}


@router.get("/console/triggers/{name}", response_class=HTMLResponse)
async def trigger_page(request: Request, name: str, operator: OperatorDep) -> HTMLResponse:
    return await render_page(request, "trigger.html", await _trigger_context(request, name), operator=operator)


@router.get("/console/triggers/{name}/live", response_class=HTMLResponse)
async def trigger_live(request: Request, name: str, operator: OperatorDep) -> HTMLResponse:
    return render(request, "_trigger_live.html", await _trigger_context(request, name), operator=operator)
