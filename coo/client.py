"""COO's REST API from Python.

    from coo.client import Client

    with Client() as coo:  # COO_API_URL / COO_API_KEY, else the dev key in .coo/dev-api-key
        coo.register_workflow(Path("examples/workflows/hello.yaml"))
        mission = coo.submit("hello", {"text": "a b c\\n"}, wait=True)
        print(mission.status, mission.output)

``AsyncClient`` has the same methods, awaited. Every error answer raises ``ApiError`` (``.status``,
``.type``, ``.message``, ``.field``); a 429 is waited out after its ``Retry-After`` first."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse

from coo import routes
from coo.aio import AsyncClient
from coo.config import (
    DEFAULT_TIMEOUT_S,
    RATE_LIMIT_PATIENCE_S,
    RECONNECT_PATIENCE_S,
    WAIT_TIMEOUT_S,
    auth_headers,
    default_api_key,
    default_base_url,
    stream_timeout,
)
from coo.errors import ApiError, ApiUnreachable, CooError, MissionTimeout
from coo.models import (
    Agent,
    AgentResult,
    AgentSpec,
    ControlAnswer,
    DeadLetter,
    EventAccepted,
    Fires,
    Mission,
    MissionAccepted,
    MissionStatus,
    ReplayAnswer,
    Schedule,
    TimelineEvent,
    Trigger,
    Workflow,
)
from coo.routes import Call, Id, Money

__all__ = [
    "Agent",
    "AgentResult",
    "AgentSpec",
    "ApiError",
    "ApiUnreachable",
    "AsyncClient",
    "Call",
    "Client",
    "CooError",
    "DeadLetter",
    "Mission",
    "MissionStatus",
    "MissionTimeout",
    "Schedule",
    "TimelineEvent",
    "Trigger",
    "Workflow",
]

T = TypeVar("T")


class Client:
    """A blocking client of the API (a context manager; or call ``close``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url or default_base_url()
        key = api_key if api_key is not None else default_api_key()
        self.rate_limit_patience_s = rate_limit_patience_s
        self.timeout_s = timeout
        self.http = httpx.Client(
            base_url=self.base_url, headers=auth_headers(key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # The transport: one request, 429s waited out, error answers raised.

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route, raw: the answer's JSON (None when empty); an error answer raises ``ApiError``."""
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    def raw(self, call: Call[Any]) -> Any:
        """A call's answer as the API sent it (JSON)."""
        return self.request(call.method, call.path, **call.request_args())

    def run(self, call: Call[T]) -> T:
        """A call's answer, read into its model."""
        return call.read(self.raw(call))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        waited = 0.0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ApiUnreachable(f"cannot reach the COO API at {self.http.base_url}: {exc}") from exc
            delay = routes.rate_limit_delay(response, waited, self.rate_limit_patience_s)
            if delay is None:
                return response
            time.sleep(delay)
            waited += delay

    # Workflows and missions.

    def register_workflow(self, definition: Mapping[str, Any] | Path | str) -> Workflow:
        """Register a new version of a workflow: a mapping, a YAML/JSON file, or YAML/JSON text."""
        return self.run(routes.register_workflow(definition))

    def workflows(self) -> list[Workflow]:
        return self.run(routes.workflows())

    def workflow(self, name: str, version: int | None = None) -> Workflow:
        """A workflow's latest version, or the version given."""
        return self.run(routes.workflow(name, version))

    def submit(
        self,
        workflow: str | Workflow,
        input: Mapping[str, Any] | None = None,
        *,
        wait: bool = False,
        timeout_s: float = WAIT_TIMEOUT_S,
        idempotency_key: str | None = None,
        budget_usd: Money | None = None,
        budget_tokens: int | None = None,
        priority: int | None = None,
        version: int | None = None,
    ) -> Mission:
        """Submit a mission (of a workflow's name, or of the version a ``Workflow`` is); with ``wait``,
        return it once final (``MissionTimeout`` after ``timeout_s``), else as it is just after submission."""
        if isinstance(workflow, Workflow):
            name, version = workflow.name, version if version is not None else workflow.version
        else:
            name = workflow
        call = routes.submit(
            name,
            input,
            version=version,
            priority=priority,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            idempotency_key=idempotency_key,
        )
        return self._accepted(self.run(call), wait=wait, timeout_s=timeout_s)

    def rerun(self, mission_id: Id, *, wait: bool = False, timeout_s: float = WAIT_TIMEOUT_S) -> Mission:
        """A new mission of the same workflow version and input (its ``rerun_of`` is ``mission_id``)."""
        return self._accepted(self.run(routes.rerun(mission_id)), wait=wait, timeout_s=timeout_s)

    def _accepted(self, accepted: MissionAccepted, *, wait: bool, timeout_s: float) -> Mission:
        return self.wait(accepted.id, timeout_s=timeout_s) if wait else self.mission(accepted.id)

    def wait(self, mission_id: Id, *, timeout_s: float = WAIT_TIMEOUT_S) -> Mission:
        """The mission once its status is final (polled, more slowly as time passes, at most every second)."""
        give_up = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            mission = self.mission(mission_id)
            if mission.final:
                return mission
            if time.monotonic() >= give_up:
                raise MissionTimeout(str(mission_id), mission.status, timeout_s)
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def mission(self, mission_id: Id) -> Mission:
        """A mission with its steps, spend and queue position."""
        return self.run(routes.mission(mission_id))

    def missions(
        self,
        status: str | None = None,
        workflow: str | None = None,
        trigger: str | None = None,
        *,
        trigger_name: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Mission]:
        """Missions, newest first, each page fetched when the iteration reaches it (``limit``: at most that many)."""
        cursor: str | None = None
        count = 0
        while limit is None or count < limit:
            call = routes.missions_page(
                status=status,
                workflow=workflow,
                trigger=trigger,
                trigger_name=trigger_name,
                limit=page_size,
                cursor=cursor,
            )
            page = self.run(call)
            for mission in page.items[: None if limit is None else limit - count]:
                count += 1
                yield mission
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    def timeline(self, mission_id: Id) -> list[TimelineEvent]:
        return self.run(routes.timeline(mission_id))

    def results(self, mission_id: Id, step: str) -> list[AgentResult]:
        """Every attempt of a step, oldest first, whole (iterations included)."""
        return self.run(routes.results(mission_id, step))

    def events(self, mission_id: Id, last_event_id: int | str | None = None) -> Iterator[TimelineEvent]:
        """The mission's timeline live, until it is final (see ``event_data``)."""
        for data in self.event_data(mission_id, last_event_id):
            yield TimelineEvent.model_validate(data)

    def event_data(
        self,
        mission_id: Id,
        last_event_id: int | str | None = None,
        *,
        reconnect_patience_s: float | None = RECONNECT_PATIENCE_S,
    ) -> Iterator[dict[str, Any]]:
        """The timeline's events as the API streams them (SSE), after ``last_event_id`` (from the start
        without it), until the ``end`` event. A dropped stream is reopened with ``Last-Event-ID``, so
        nothing is missed or repeated; ``ApiUnreachable`` once it cannot for ``reconnect_patience_s``."""
        last = last_event_id
        delay = 0.5
        down_since: float | None = None
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with connect_sse(
                    self.http,
                    "GET",
                    routes.events_path(mission_id),
                    headers=headers,
                    timeout=stream_timeout(self.timeout_s),
                ) as source:
                    response = source.response
                    if response.status_code == 429:
                        response.read()
                        time.sleep(routes.rate_limit_delay(response, 0.0, self.rate_limit_patience_s) or 1.0)
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise ApiError.from_response(response)
                    down_since = None
                    for event in source.iter_sse():
                        if event.event == "end":
                            return
                        if event.id:
                            last = event.id
                        yield event.json()
                        delay = 0.5
            except (httpx.TransportError, SSEError) as exc:  # the API went away: reconnect and resume
                down_since = down_since or time.monotonic()
                if reconnect_patience_s is not None and time.monotonic() - down_since > reconnect_patience_s:
                    raise ApiUnreachable(f"the event stream of mission {mission_id} is gone: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # Steering.

    def pause(self, mission_id: Id, reason: str | None = None) -> ControlAnswer:
        return self.run(routes.control(mission_id, "pause", {"reason": reason}))

    def resume(
        self, mission_id: Id, *, add_budget_usd: Money | None = None, add_budget_tokens: int | None = None
    ) -> ControlAnswer:
        return self.run(routes.resume(mission_id, add_budget_usd=add_budget_usd, add_budget_tokens=add_budget_tokens))

    def cancel(self, mission_id: Id, reason: str | None = None) -> ControlAnswer:
        return self.run(routes.control(mission_id, "cancel", {"reason": reason}))

    def approve(self, mission_id: Id, step: str, reason: str | None = None) -> ControlAnswer:
        return self.run(routes.decide(mission_id, step, "approve", reason))

    def reject(self, mission_id: Id, step: str, reason: str | None = None) -> ControlAnswer:
        return self.run(routes.decide(mission_id, step, "reject", reason))

    # Agents and dead letters.

    def agents(self) -> list[Agent]:
        return self.run(routes.agents())

    def agent(self, name: str) -> Agent:
        return self.run(routes.agent(name))

    def put_agent(self, name: str, spec: AgentSpec | Mapping[str, Any]) -> Agent:
        """Create or update an agent definition."""
        return self.run(routes.put_agent(name, spec))

    def dead_letters(
        self, *, mission_id: Id | None = None, replayed: bool | None = None, page_size: int = 100
    ) -> Iterator[DeadLetter]:
        """Dead letters, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            call = routes.dead_letters_page(mission_id=mission_id, replayed=replayed, limit=page_size, cursor=cursor)
            page = self.run(call)
            yield from page.items
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    def replay(self, dead_letter_id: Id) -> ReplayAnswer:
        return self.run(routes.replay(dead_letter_id))

    # Schedules, triggers and events.

    def schedules(self) -> list[Schedule]:
        return self.run(routes.schedules())

    def schedule(self, name: str, *, fires: int | None = None) -> Schedule:
        return self.run(routes.schedule(name, fires=fires))

    def create_schedule(self, body: Mapping[str, Any]) -> Schedule:
        return self.run(routes.create_schedule(body))

    def pause_schedule(self, name: str) -> Schedule:
        return self.run(routes.schedule_state(name, "pause"))

    def resume_schedule(self, name: str) -> Schedule:
        return self.run(routes.schedule_state(name, "resume"))

    def trigger_schedule(self, name: str) -> Fires:
        return self.run(routes.fire_schedule(name))

    def backfill_schedule(self, name: str, start: str, end: str) -> Fires:
        return self.run(routes.fire_schedule(name, {"start": start, "end": end}))

    def delete_schedule(self, name: str) -> None:
        self.run(routes.delete_schedule(name))

    def triggers(self) -> list[Trigger]:
        return self.run(routes.triggers())

    def trigger(self, name: str) -> Trigger:
        return self.run(routes.trigger(name))

    def create_trigger(self, body: Mapping[str, Any]) -> Trigger:
        return self.run(routes.create_trigger(body))

    def delete_trigger(self, name: str) -> None:
        self.run(routes.delete_trigger(name))

    def send_event(self, event: str, event_id: str, payload: Mapping[str, Any] | None = None) -> EventAccepted:
        """Deliver an event to the triggers listening for it (the same id again starts nothing)."""
        return self.run(routes.send_event(event, event_id, payload))
