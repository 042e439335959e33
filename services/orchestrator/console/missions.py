"""Console pages of missions: the list, one mission (DAG, timeline, actions) and one step's attempts.

Each page has a live part (``…/live``, ``…/table``) that the page polls and swaps in;
they run the same query functions as the REST routes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from services.common.status import MISSION_TERMINAL, MissionStatus, StepStatus, TriggerType
from services.orchestrator.console import views
from services.orchestrator.console.graph import GraphStep, Layout, layout
from services.orchestrator.console.web import (
    OperatorDep,
    parse_uuid,
    refusal_page,
    render,
    render_page,
)
from services.orchestrator.errors import InvalidInput, OrchestratorError
from services.orchestrator.reads import overview
from services.orchestrator.reads.catalog import latest_workflows
from services.orchestrator.reads.missions import (
    MissionOut,
    find_missions,
    read_mission,
    read_step_results,
    read_timeline,
)
from services.orchestrator.reads.overview import Progress
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
TIMELINE_LIMIT = 1000


async def _list_context(request: Request, filters: MissionFilters, cursor: str) -> dict[str, Any]:
    state = state_of(request)
    problem = None
    status, workflow, trigger, trigger_name = filters.status, filters.workflow, filters.trigger, filters.trigger_name
    if status and status not in {s.value for s in MissionStatus}:
        problem, status = f"unknown status '{status}': showing every status", ""
    if trigger and trigger not in {t.value for t in TriggerType}:
        problem, trigger = f"unknown trigger type '{trigger}': showing every kind of start", ""
    trigger_name = trigger_name.strip()
    chosen = {
        "status": status or None,
        "workflow": workflow or None,
        "trigger": trigger or None,
        "trigger_name": trigger_name or None,
    }
    try:
        page = await find_missions(state, **chosen, limit=PAGE_SIZE, cursor=cursor or None)
    except InvalidInput:
        problem = "that page link is no longer valid: showing the newest missions"
        page = await find_missions(state, **chosen, limit=PAGE_SIZE, cursor=None)
        cursor = ""
    progress = await overview.step_progress(state, [m.id for m in page.items])
    kept = {"status": status, "workflow": workflow, "trigger": trigger, "trigger_name": trigger_name}
    return {
        "newest_url": "/console?" + _query(kept) if cursor else None,
        "older_url": "/console?" + _query({**kept, "cursor": page.next_cursor}) if page.next_cursor else None,
        "missions": page.items,
        "next_cursor": page.next_cursor,
        "progress": progress,
        "filters": {**kept, "cursor": cursor},
        "problem": problem,
    }


def _query(filters: Mapping[str, str | None]) -> str:
    return urlencode({k: v for k, v in filters.items() if v})


@dataclass(frozen=True)
class MissionFilters:
    """The missions list's filters, as the query string gives them ("": any)."""

    status: str = ""
    workflow: str = ""
    trigger: str = ""
    trigger_name: str = ""


FiltersDep = Annotated[MissionFilters, Depends()]


@router.get("/console", response_class=HTMLResponse)
async def missions_page(request: Request, operator: OperatorDep, filters: FiltersDep, cursor: str = "") -> HTMLResponse:
    context = await _list_context(request, filters, cursor)
    workflows = [w.name for w in await latest_workflows(state_of(request))]
    context.update(
        workflows=workflows,
        statuses=[s.value for s in MissionStatus],
        triggers=[t.value for t in TriggerType],
        table_query=_query(context["filters"]),
    )
    return await render_page(request, "missions.html", context, operator=operator)


@router.get("/console/missions/table", response_class=HTMLResponse)
async def missions_table(
    request: Request, operator: OperatorDep, filters: FiltersDep, cursor: str = ""
) -> HTMLResponse:
    context = await _list_context(request, filters, cursor)
    return render(request, "_missions_table.html", context, operator=operator)


def _graphs(mission: MissionOut) -> tuple[Layout, Layout]:
    """The mission's DAG laid out wide (layers as columns) and tall (layers as rows, for phones)."""
    steps = [GraphStep(s.key, tuple(s.depends_on), s.agent, s.status) for s in mission.steps or []]
    return layout(steps), layout(steps, vertical=True)


async def _mission_context(request: Request, mission_id: str) -> dict[str, Any]:
    state = state_of(request)
    ident = parse_uuid(mission_id, "mission")
    try:
        mission = await read_mission(state, ident)
        timeline = await read_timeline(state, ident, limit=TIMELINE_LIMIT)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    steps = mission.steps or []
    done = sum(1 for s in steps if s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED))
    trace = await overview.mission_trace(state, ident)
    settings = state.settings
    trace_url = logs_url = None
    if trace is not None:
        trace_url = views.trace_link(
            settings.grafana_url,
            settings.grafana_tempo_uid,
            views.trace_id(trace.traceparent),
            trace.created_at,
            trace.finished_at,
        )
        logs_url = views.logs_link(
            settings.grafana_url, settings.grafana_loki_uid, ident, trace.created_at, trace.finished_at
        )
    return {
        "mission": mission,
        "steps": steps,
        "progress": Progress(done=done, total=len(steps)),
        "graphs": _graphs(mission),
        "timeline": list(reversed(timeline)),
        "timeline_full": len(timeline) >= TIMELINE_LIMIT,
        "waiting": [s for s in steps if s.status == StepStatus.AWAITING_APPROVAL],
        "final": mission.status in MISSION_TERMINAL,
        "trace_url": trace_url,
        "logs_url": logs_url,
        "usd_percent": views.percent(mission.spent_usd, mission.budget_usd),
        "tokens_percent": views.percent(mission.spent_tokens, mission.budget_tokens),
    }


@router.get("/console/missions/{mission_id}", response_class=HTMLResponse)
async def mission_page(request: Request, mission_id: str, operator: OperatorDep) -> HTMLResponse:
    context = await _mission_context(request, mission_id)
    return await render_page(request, "mission.html", context, operator=operator)


@router.get("/console/missions/{mission_id}/live", response_class=HTMLResponse)
async def mission_live(request: Request, mission_id: str, operator: OperatorDep) -> HTMLResponse:
    return render(request, "_mission_live.html", await _mission_context(request, mission_id), operator=operator)


async def _step_context(request: Request, mission_id: str, key: str) -> dict[str, Any]:
    state = state_of(request)
    ident = parse_uuid(mission_id, "mission")
    try:
        mission = await read_mission(state, ident)
        results = await read_step_results(state, ident, key)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    step = next(s for s in mission.steps or [] if s.key == key)
    settings = state.settings
    end = mission.finished_at or datetime.now(UTC)
    trace_links = {
        r.attempt: views.trace_link(settings.grafana_url, settings.grafana_tempo_uid, r.trace_id, r.started_at, end)
        for r in results
    }
    return {"mission": mission, "step": step, "results": results, "trace_links": trace_links}


@router.get("/console/missions/{mission_id}/steps/{key}", response_class=HTMLResponse)
async def step_page(request: Request, mission_id: str, key: str, operator: OperatorDep) -> HTMLResponse:
    context = await _step_context(request, mission_id, key)
    return await render_page(request, "step.html", context, operator=operator)


@router.get("/console/missions/{mission_id}/steps/{key}/live", response_class=HTMLResponse)
async def step_live(request: Request, mission_id: str, key: str, operator: OperatorDep) -> HTMLResponse:
    return render(request, "_step_live.html", await _step_context(request, mission_id, key), operator=operator)
