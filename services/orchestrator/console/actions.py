"""The console's actions: pause, resume (with added budget), cancel, approve, reject, rerun a
mission, replay a dead letter, submit a mission, and pause, resume or fire a schedule now. Each
takes the same path as its REST route (the CONTROL command applied in the request; the rerun; the
dead-letter replay; the mission submit; the schedule commands), and its outcome, good or bad, is
shown on the page."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.common.contracts import Control, ControlAction
from services.common.status import FireOutcome
from services.orchestrator.audit import note_target
from services.orchestrator.commands.control import ReasonBody, ResumeBody, run_control
from services.orchestrator.commands.dlq import replay_letter
from services.orchestrator.commands.missions import MissionCreate, rerun_mission, submit_mission
from services.orchestrator.commands.schedules import pause_schedule, trigger_schedule
from services.orchestrator.console import views
from services.orchestrator.console.session import safe_next
from services.orchestrator.console.web import (
    ActorDep,
    ConsoleError,
    FormDep,
    Operator,
    flash,
    is_htmx,
    parse_uuid,
    refusal_page,
)
from services.orchestrator.errors import OrchestratorError
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)

_DONE = {
    ControlAction.PAUSE: "Mission paused.",
    ControlAction.RESUME: "Mission resumed.",
    ControlAction.CANCEL: "Mission cancelled.",
    ControlAction.APPROVE: "Step '{step}' approved: it runs now.",
    ControlAction.REJECT: "Step '{step}' rejected.",
}


def _invalid(exc: ValidationError, labels: dict[str, str]) -> ConsoleError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return ConsoleError(422, f"{labels.get(where, where)}: {first.get('msg', 'invalid')}", title="Invalid input")


def _done(request: Request, operator: Operator, message: str, form: dict[str, str], fallback: str) -> Response:
    """Success: a message for htmx, or back to the page the form came from."""
    if is_htmx(request):
        return flash(request, operator, message, ok=True, refresh=True)
    return RedirectResponse(safe_next(form.get("next"), fallback), status_code=303)


async def _control(
    request: Request, operator: Operator, form: dict[str, str], control: Control, fallback: str
) -> Response:
    try:
        answer = await run_control(state_of(request), control)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    message = _DONE[control.action].format(step=answer.step_key)
    return _done(request, operator, message, form, fallback)


def _reason(form: dict[str, str]) -> str | None:
    try:
        body = ReasonBody(reason=form.get("reason", "").strip() or None)
    except ValidationError as exc:
        raise _invalid(exc, {"reason": "Reason"}) from exc
    return body.reason


@router.post("/console/missions/{mission_id}/pause")
async def pause(request: Request, mission_id: str, operator: ActorDep, form: FormDep) -> Response:
    ident = parse_uuid(mission_id, "mission")
    control = Control(mission_id=ident, action=ControlAction.PAUSE, actor=operator.caller.name, reason=_reason(form))
    return await _control(request, operator, form, control, f"/console/missions/{ident}")


@router.post("/console/missions/{mission_id}/cancel")
async def cancel(request: Request, mission_id: str, operator: ActorDep, form: FormDep) -> Response:
    ident = parse_uuid(mission_id, "mission")
    control = Control(mission_id=ident, action=ControlAction.CANCEL, actor=operator.caller.name, reason=_reason(form))
    return await _control(request, operator, form, control, f"/console/missions/{ident}")


def _number(form: dict[str, str], field: str, label: str, kind: type[Decimal] | type[int]) -> Any:
    raw = form.get(field, "").strip().replace(",", "").lstrip("$")
    if not raw:
        return None
    try:
        return kind(raw) if kind is Decimal else int(raw)
    except (InvalidOperation, ValueError) as exc:
        expected = "a number" if kind is Decimal else "a whole number"
        raise ConsoleError(422, f"{label}: '{raw}' is not {expected}", title="Invalid input") from exc


@router.post("/console/missions/{mission_id}/resume")
async def resume(request: Request, mission_id: str, operator: ActorDep, form: FormDep) -> Response:
    ident = parse_uuid(mission_id, "mission")
    labels = {"add_budget_usd": "Add budget (USD)", "add_budget_tokens": "Add budget (tokens)"}
    try:
        body = ResumeBody(
            add_budget_usd=_number(form, "add_budget_usd", labels["add_budget_usd"], Decimal),
            add_budget_tokens=_number(form, "add_budget_tokens", labels["add_budget_tokens"], int),
        )
    except ValidationError as exc:
        raise _invalid(exc, labels) from exc
    control = Control(
        mission_id=ident,
        action=ControlAction.RESUME,
        actor=operator.caller.name,
        add_budget_usd=body.add_budget_usd,
        add_budget_tokens=body.add_budget_tokens,
    )
    return await _control(request, operator, form, control, f"/console/missions/{ident}")


@router.post("/console/missions/{mission_id}/steps/{key}/approve")
async def approve(request: Request, mission_id: str, key: str, operator: ActorDep, form: FormDep) -> Response:
    return await _decide(request, operator, form, ControlAction.APPROVE, mission_id, key)


@router.post("/console/missions/{mission_id}/steps/{key}/reject")
async def reject(request: Request, mission_id: str, key: str, operator: ActorDep, form: FormDep) -> Response:
    return await _decide(request, operator, form, ControlAction.REJECT, mission_id, key)


async def _decide(
    request: Request, operator: Operator, form: dict[str, str], action: ControlAction, mission_id: str, key: str
) -> Response:
    ident = parse_uuid(mission_id, "mission")
    control = Control(mission_id=ident, action=action, step_key=key, actor=operator.caller.name, reason=_reason(form))
    return await _control(request, operator, form, control, f"/console/missions/{ident}")


def _to_mission(request: Request, mission_id: object) -> Response:
    """Success of an action that starts a mission: its page (htmx follows ``HX-Redirect``)."""
    target = f"/console/missions/{mission_id}"
    if is_htmx(request):
        return Response("", status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.post("/console/missions/{mission_id}/rerun")
async def rerun(request: Request, mission_id: str, operator: ActorDep, _: FormDep) -> Response:
    """Run a mission again (its workflow version, input, priority and budgets); on to the new one's page."""
    ident = parse_uuid(mission_id, "mission")
    try:
        accepted = await rerun_mission(state_of(request), ident, operator.caller)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    note_target("mission", accepted.id)
    return _to_mission(request, accepted.id)


@router.post("/console/dlq/{letter_id}/replay")
async def replay(request: Request, letter_id: str, operator: ActorDep, form: FormDep) -> Response:
    ident = parse_uuid(letter_id, "dead letter")
    try:
        done = await replay_letter(state_of(request), ident, operator.caller.name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    if done.mission_id is not None:
        message = (
            f"Dead letter {views.short_id(ident)} replayed: step '{done.step_key}' of mission "
            f"{views.short_id(done.mission_id)} runs again (attempt {done.attempt})."
        )
    else:
        message = f"Dead letter {views.short_id(ident)} replayed: its message was published again on {done.subject}."
    return _done(request, operator, message, form, "/console/dlq")


@router.post("/console/workflows/{name}/missions")
async def submit(request: Request, name: str, operator: ActorDep, form: FormDep) -> Response:
    raw_input = form.get("input", "").strip() or "{}"
    try:
        mission_input = json.loads(raw_input)
    except json.JSONDecodeError as exc:
        raise ConsoleError(
            422, f"Input: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", title="Invalid input"
        ) from exc
    if not isinstance(mission_input, dict):
        raise ConsoleError(422, 'Input: must be a JSON object, such as {"repo": "…"}', title="Invalid input")
    labels = {"priority": "Priority", "budget_usd": "Budget (USD)", "budget_tokens": "Budget (tokens)"}
    try:
        body = MissionCreate(
            workflow=name,
            input=mission_input,
            priority=_number(form, "priority", "Priority", int) or 0,
            budget_usd=_number(form, "budget_usd", labels["budget_usd"], Decimal),
            budget_tokens=_number(form, "budget_tokens", labels["budget_tokens"], int),
        )
    except ValidationError as exc:
        raise _invalid(exc, labels) from exc
    try:
        accepted = await submit_mission(body, state_of(request), operator.caller)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    return _to_mission(request, accepted.id)


async def _pause_schedule(
    request: Request, name: str, operator: Operator, form: dict[str, str], paused: bool
) -> Response:
    note_target("schedule", name)
    try:
        schedule = await pause_schedule(state_of(request), name, paused=paused)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    if paused:
        message = f"Schedule '{name}' paused: nothing fires until it is resumed."
    else:
        upcoming = schedule.next_fire_times
        message = f"Schedule '{name}' resumed" + (f": it next fires at {views.when(upcoming[0])}." if upcoming else ".")
    return _done(request, operator, message, form, f"/console/schedules/{quote(name, safe='')}")


@router.post("/console/schedules/{name}/pause")
async def pause_a_schedule(request: Request, name: str, operator: ActorDep, form: FormDep) -> Response:
    return await _pause_schedule(request, name, operator, form, paused=True)


@router.post("/console/schedules/{name}/resume")
async def resume_a_schedule(request: Request, name: str, operator: ActorDep, form: FormDep) -> Response:
    return await _pause_schedule(request, name, operator, form, paused=False)


@router.post("/console/schedules/{name}/fire")
async def fire_a_schedule(request: Request, name: str, operator: ActorDep, form: FormDep) -> Response:
    note_target("schedule", name)
    try:
        fired = await trigger_schedule(state_of(request), name)
    except OrchestratorError as exc:
        raise refusal_page(exc) from exc
    one = fired.fires[0]
    if one.outcome == FireOutcome.STARTED and one.mission_id is not None:
        message = f"Schedule '{name}' fired: mission {views.short_id(one.mission_id)} started."
    elif one.outcome == FireOutcome.FAILED:
        message = f"Schedule '{name}' fired, but no mission started: {one.error or 'refused'}."
    else:
        message = f"Schedule '{name}' fired: {one.outcome} by its overlap policy, as its mission still runs."
    return _done(request, operator, message, form, f"/console/schedules/{quote(name, safe='')}")
