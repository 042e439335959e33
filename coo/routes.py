"""Every route the client calls, as a ``Call``: method, path, query, body and how to read the answer.
``Client`` and ``AsyncClient`` run the same calls, one blocking and one awaited."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from coo.models import (
    Agent,
    AgentResult,
    AgentSpec,
    ControlAnswer,
    DeadLetterPage,
    EventAccepted,
    Fires,
    Mission,
    MissionAccepted,
    MissionPage,
    ReplayAnswer,
    Schedule,
    TimelineEvent,
    Trigger,
    Workflow,
)

T = TypeVar("T")
Id = uuid.UUID | str
Money = Decimal | str | int | float


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the API and the reader of its answer's JSON."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.content is not None:
            args["content"] = self.content
        elif self.json is not None:
            args["json"] = self.json
        return args


def _model(kind: type[T]) -> Callable[[Any], T]:
    return TypeAdapter(kind).validate_python


def _nothing(_: Any) -> None:
    return None


def _seg(value: Id) -> str:
    """A path segment, quoted (a name may hold characters a URL path cannot)."""
    return quote(str(value), safe="")


def _query(**values: Any) -> dict[str, Any]:
    """Query parameters given (not None); booleans as ``true`` / ``false``."""
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items() if v is not None}


def _money(value: Money | None) -> str | None:
    """A sum of money as exact decimal text (a float goes through its shortest repr, 0.1 → "0.1")."""
    return None if value is None else str(Decimal(str(value)))


def _body(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def register_workflow(definition: Mapping[str, Any] | Path | str) -> Call[Workflow]:
    """A definition as a mapping, a YAML or JSON file (``.json``: JSON), or YAML / JSON text."""
    if isinstance(definition, Path):
        content = definition.read_bytes()
        is_json = definition.suffix == ".json"
    elif isinstance(definition, str):
        content = definition.encode()
        is_json = definition.lstrip().startswith("{")
    else:
        content = json.dumps(dict(definition)).encode()
        is_json = True
    content_type = "application/json" if is_json else "application/yaml"
    return Call("POST", "/v1/workflows", _model(Workflow), content=content, headers={"Content-Type": content_type})


def workflows() -> Call[list[Workflow]]:
    return Call("GET", "/v1/workflows", _model(list[Workflow]))


def workflow(name: str, version: int | None = None) -> Call[Workflow]:
    return Call("GET", f"/v1/workflows/{_seg(name)}", _model(Workflow), params=_query(version=version))


def submit(
    workflow: str,
    input: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    priority: int | None = None,
    budget_usd: Money | None = None,
    budget_tokens: int | None = None,
    idempotency_key: str | None = None,
) -> Call[MissionAccepted]:
    body = _body(
        workflow=workflow,
        input=dict(input or {}),
        version=version,
        priority=priority,
        budget_usd=_money(budget_usd),
        budget_tokens=budget_tokens,
        idempotency_key=idempotency_key,
    )
    return Call("POST", "/v1/missions", _model(MissionAccepted), json=body)


def mission(mission_id: Id) -> Call[Mission]:
    return Call("GET", f"/v1/missions/{_seg(mission_id)}", _model(Mission))


def missions_page(
    *,
    status: str | None = None,
    workflow: str | None = None,
    trigger: str | None = None,
    trigger_name: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[MissionPage]:
    params = _query(
        status=status, workflow=workflow, trigger=trigger, trigger_name=trigger_name, limit=limit, cursor=cursor
    )
    return Call("GET", "/v1/missions", _model(MissionPage), params=params)


def timeline(mission_id: Id) -> Call[list[TimelineEvent]]:
    return Call("GET", f"/v1/missions/{_seg(mission_id)}/timeline", _model(list[TimelineEvent]))


def events_path(mission_id: Id) -> str:
    return f"/v1/missions/{_seg(mission_id)}/events"


def results(mission_id: Id, step: str) -> Call[list[AgentResult]]:
    return Call("GET", f"/v1/missions/{_seg(mission_id)}/steps/{_seg(step)}/results", _model(list[AgentResult]))


def control(mission_id: Id, action: str, body: Mapping[str, Any] | None = None) -> Call[ControlAnswer]:
    """``pause``, ``resume`` or ``cancel`` a mission."""
    return Call("POST", f"/v1/missions/{_seg(mission_id)}/{action}", _model(ControlAnswer), json=dict(body or {}))


def resume(
    mission_id: Id, *, add_budget_usd: Money | None = None, add_budget_tokens: int | None = None
) -> Call[ControlAnswer]:
    body = _body(add_budget_usd=_money(add_budget_usd), add_budget_tokens=add_budget_tokens)
    return control(mission_id, "resume", body)


def decide(mission_id: Id, step: str, verdict: str, reason: str | None = None) -> Call[ControlAnswer]:
    """``approve`` or ``reject`` a step waiting for approval."""
    path = f"/v1/missions/{_seg(mission_id)}/steps/{_seg(step)}/{verdict}"
    return Call("POST", path, _model(ControlAnswer), json={"reason": reason})


def rerun(mission_id: Id) -> Call[MissionAccepted]:
    return Call("POST", f"/v1/missions/{_seg(mission_id)}/rerun", _model(MissionAccepted), json={})


def agents() -> Call[list[Agent]]:
    return Call("GET", "/v1/agents", _model(list[Agent]))


def agent(name: str) -> Call[Agent]:
    return Call("GET", f"/v1/agents/{_seg(name)}", _model(Agent))


def put_agent(name: str, spec: AgentSpec | Mapping[str, Any]) -> Call[Agent]:
    body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, AgentSpec) else dict(spec)
    return Call("PUT", f"/v1/agents/{_seg(name)}", _model(Agent), json=body)


def dead_letters_page(
    *, mission_id: Id | None = None, replayed: bool | None = None, limit: int | None = None, cursor: str | None = None
) -> Call[DeadLetterPage]:
    params = _query(mission_id=mission_id, replayed=replayed, limit=limit, cursor=cursor)
    return Call("GET", "/v1/dlq", _model(DeadLetterPage), params=params)


def replay(dead_letter_id: Id) -> Call[ReplayAnswer]:
    return Call("POST", f"/v1/dlq/{_seg(dead_letter_id)}/replay", _model(ReplayAnswer))


def schedules() -> Call[list[Schedule]]:
    return Call("GET", "/v1/schedules", _model(list[Schedule]))


def schedule(name: str, *, fires: int | None = None) -> Call[Schedule]:
    return Call("GET", f"/v1/schedules/{_seg(name)}", _model(Schedule), params=_query(fires=fires))


def create_schedule(body: Mapping[str, Any]) -> Call[Schedule]:
    return Call("POST", "/v1/schedules", _model(Schedule), json=dict(body))


def schedule_state(name: str, action: str) -> Call[Schedule]:
    """``pause`` or ``resume`` a schedule."""
    return Call("POST", f"/v1/schedules/{_seg(name)}/{action}", _model(Schedule), json={})


def fire_schedule(name: str, body: Mapping[str, Any] | None = None) -> Call[Fires]:
    """Fire now (no body), or backfill ``{"start", "end"}``."""
    action = "backfill" if body else "trigger"
    return Call("POST", f"/v1/schedules/{_seg(name)}/{action}", _model(Fires), json=dict(body or {}))


def delete_schedule(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/schedules/{_seg(name)}", _nothing)


def triggers() -> Call[list[Trigger]]:
    return Call("GET", "/v1/triggers", _model(list[Trigger]))


def trigger(name: str) -> Call[Trigger]:
    return Call("GET", f"/v1/triggers/{_seg(name)}", _model(Trigger))


def create_trigger(body: Mapping[str, Any]) -> Call[Trigger]:
    return Call("POST", "/v1/triggers", _model(Trigger), json=dict(body))


def delete_trigger(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/triggers/{_seg(name)}", _nothing)


def send_event(event: str, event_id: str, payload: Mapping[str, Any] | None = None) -> Call[EventAccepted]:
    body = {"event": event, "id": event_id, "payload": dict(payload or {})}
    return Call("POST", "/v1/events", _model(EventAccepted), json=body)


def rate_limit_delay(response: httpx.Response, waited_s: float, patience_s: float) -> float | None:
    """How long to wait before asking again after a 429 (its ``Retry-After``), or None: do not."""
    if response.status_code != 429:
        return None
    try:
        delay = max(float(response.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        delay = 1.0
    return delay if waited_s + delay <= patience_s else None
