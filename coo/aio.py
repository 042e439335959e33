"""The asyncio face of COO's REST API: ``AsyncClient``, the methods of ``coo.client.Client``, awaited
(iterators are async iterators)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse

from coo import routes
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
from coo.errors import ApiError, ApiUnreachable, MissionTimeout
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
    ReplayAnswer,
    Schedule,
    TimelineEvent,
    Trigger,
    Workflow,
)
from coo.routes import Call, Id, Money

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of the API (an async context manager; or await ``aclose``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        rate_limit_patience_s: float = RATE_LIMIT_PATIENCE_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url or default_base_url()
        key = api_key if api_key is not None else default_api_key()
        self.rate_limit_patience_s = rate_limit_patience_s
        self.timeout_s = timeout
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=auth_headers(key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # The transport: one request, 429s waited out, error answers raised.

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route, raw: the answer's JSON (None when empty); an error answer raises ``ApiError``."""
        response = await self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    async def raw(self, call: Call[Any]) -> Any:
        """A call's answer as the API sent it (JSON)."""
        return await self.request(call.method, call.path, **call.request_args())

    async def run(self, call: Call[T]) -> T:
        """A call's answer, read into its model."""
        return call.read(await self.raw(call))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        waited = 0.0
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ApiUnreachable(f"cannot reach the COO API at {self.http.base_url}: {exc}") from exc
            delay = routes.rate_limit_delay(response, waited, self.rate_limit_patience_s)
            if delay is None:
                return response
            await asyncio.sleep(delay)
            waited += delay

    # Workflows and missions.

    async def register_workflow(self, definition: Mapping[str, Any] | Path | str) -> Workflow:
        """Register a new version of a workflow: a mapping, a YAML/JSON file, or YAML/JSON text."""
        return await self.run(routes.register_workflow(definition))

    async def workflows(self) -> list[Workflow]:
        return await self.run(routes.workflows())

    async def workflow(self, name: str, version: int | None = None) -> Workflow:
        """A workflow's latest version, or the version given."""
        return await self.run(routes.workflow(name, version))

    async def submit(
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
        return await self._accepted(await self.run(call), wait=wait, timeout_s=timeout_s)

    async def rerun(self, mission_id: Id, *, wait: bool = False, timeout_s: float = WAIT_TIMEOUT_S) -> Mission:
        """A new mission of the same workflow version and input (its ``rerun_of`` is ``mission_id``)."""
        return await self._accepted(await self.run(routes.rerun(mission_id)), wait=wait, timeout_s=timeout_s)

    async def _accepted(self, accepted: MissionAccepted, *, wait: bool, timeout_s: float) -> Mission:
        return await self.wait(accepted.id, timeout_s=timeout_s) if wait else await self.mission(accepted.id)

    async def wait(self, mission_id: Id, *, timeout_s: float = WAIT_TIMEOUT_S) -> Mission:
        """The mission once its status is final (polled, more slowly as time passes, at most every second)."""
        give_up = asyncio.get_running_loop().time() + timeout_s
        delay = 0.1
        while True:
            mission = await self.mission(mission_id)
            if mission.final:
                return mission
            if asyncio.get_running_loop().time() >= give_up:
                raise MissionTimeout(str(mission_id), mission.status, timeout_s)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def mission(self, mission_id: Id) -> Mission:
        """A mission with its steps, spend and queue position."""
        return await self.run(routes.mission(mission_id))

    async def missions(
        self,
        status: str | None = None,
        workflow: str | None = None,
        trigger: str | None = None,
        *,
        trigger_name: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Mission]:
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
            page = await self.run(call)
            for mission in page.items[: None if limit is None else limit - count]:
                count += 1
                yield mission
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def timeline(self, mission_id: Id) -> list[TimelineEvent]:
        return await self.run(routes.timeline(mission_id))

    async def results(self, mission_id: Id, step: str) -> list[AgentResult]:
        """Every attempt of a step, oldest first, whole (iterations included)."""
        return await self.run(routes.results(mission_id, step))

    async def events(self, mission_id: Id, last_event_id: int | str | None = None) -> AsyncIterator[TimelineEvent]:
        """The mission's timeline live, until it is final (see ``event_data``)."""
        async for data in self.event_data(mission_id, last_event_id):
            yield TimelineEvent.model_validate(data)

    async def event_data(
        self,
        mission_id: Id,
        last_event_id: int | str | None = None,
        *,
        reconnect_patience_s: float | None = RECONNECT_PATIENCE_S,
    ) -> AsyncIterator[dict[str, Any]]:
        """The timeline's events as the API streams them (SSE), after ``last_event_id`` (from the start
        without it), until the ``end`` event. A dropped stream is reopened with ``Last-Event-ID``, so
        nothing is missed or repeated; ``ApiUnreachable`` once it cannot for ``reconnect_patience_s``."""
        last = last_event_id
        delay = 0.5
        down_since: float | None = None
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with aconnect_sse(
                    self.http,
                    "GET",
                    routes.events_path(mission_id),
                    headers=headers,
                    timeout=stream_timeout(self.timeout_s),
                ) as source:
                    response = source.response
                    if response.status_code == 429:
                        await response.aread()
                        await asyncio.sleep(routes.rate_limit_delay(response, 0.0, self.rate_limit_patience_s) or 1.0)
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise ApiError.from_response(response)
                    down_since = None
                    async for event in source.aiter_sse():
                        if event.event == "end":
                            return
                        if event.id:
                            last = event.id
                        yield event.json()
                        delay = 0.5
            except (httpx.TransportError, SSEError) as exc:  # the API went away: reconnect and resume
                down_since = down_since or asyncio.get_running_loop().time()
                if (
                    reconnect_patience_s is not None
                    and asyncio.get_running_loop().time() - down_since > reconnect_patience_s
                ):
                    raise ApiUnreachable(f"the event stream of mission {mission_id} is gone: {exc}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # Steering.

    async def pause(self, mission_id: Id, reason: str | None = None) -> ControlAnswer:
        return await self.run(routes.control(mission_id, "pause", {"reason": reason}))

    async def resume(
        self, mission_id: Id, *, add_budget_usd: Money | None = None, add_budget_tokens: int | None = None
    ) -> ControlAnswer:
        return await self.run(
            routes.resume(mission_id, add_budget_usd=add_budget_usd, add_budget_tokens=add_budget_tokens)
        )

    async def cancel(self, mission_id: Id, reason: str | None = None) -> ControlAnswer:
        return await self.run(routes.control(mission_id, "cancel", {"reason": reason}))

    async def approve(self, mission_id: Id, step: str, reason: str | None = None) -> ControlAnswer:
        return await self.run(routes.decide(mission_id, step, "approve", reason))

    async def reject(self, mission_id: Id, step: str, reason: str | None = None) -> ControlAnswer:
        return await self.run(routes.decide(mission_id, step, "reject", reason))

    # Agents and dead letters.

    async def agents(self) -> list[Agent]:
        return await self.run(routes.agents())

    async def agent(self, name: str) -> Agent:
        return await self.run(routes.agent(name))

    async def put_agent(self, name: str, spec: AgentSpec | Mapping[str, Any]) -> Agent:
        """Create or update an agent definition."""
        return await self.run(routes.put_agent(name, spec))

    async def dead_letters(
        self, *, mission_id: Id | None = None, replayed: bool | None = None, page_size: int = 100
    ) -> AsyncIterator[DeadLetter]:
        """Dead letters, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            call = routes.dead_letters_page(mission_id=mission_id, replayed=replayed, limit=page_size, cursor=cursor)
            page = await self.run(call)
            for item in page.items:
                yield item
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    async def replay(self, dead_letter_id: Id) -> ReplayAnswer:
        return await self.run(routes.replay(dead_letter_id))

    # Schedules, triggers and events.

    async def schedules(self) -> list[Schedule]:
        return await self.run(routes.schedules())

    async def schedule(self, name: str, *, fires: int | None = None) -> Schedule:
        return await self.run(routes.schedule(name, fires=fires))

    async def create_schedule(self, body: Mapping[str, Any]) -> Schedule:
        return await self.run(routes.create_schedule(body))

    async def pause_schedule(self, name: str) -> Schedule:
        return await self.run(routes.schedule_state(name, "pause"))

    async def resume_schedule(self, name: str) -> Schedule:
        return await self.run(routes.schedule_state(name, "resume"))

    async def trigger_schedule(self, name: str) -> Fires:
        return await self.run(routes.fire_schedule(name))

    async def backfill_schedule(self, name: str, start: str, end: str) -> Fires:
        return await self.run(routes.fire_schedule(name, {"start": start, "end": end}))

    async def delete_schedule(self, name: str) -> None:
        await self.run(routes.delete_schedule(name))

    async def triggers(self) -> list[Trigger]:
        return await self.run(routes.triggers())

    async def trigger(self, name: str) -> Trigger:
        return await self.run(routes.trigger(name))

    async def create_trigger(self, body: Mapping[str, Any]) -> Trigger:
        return await self.run(routes.create_trigger(body))

    async def delete_trigger(self, name: str) -> None:
        await self.run(routes.delete_trigger(name))

    async def send_event(self, event: str, event_id: str, payload: Mapping[str, Any] | None = None) -> EventAccepted:
        """Deliver an event to the triggers listening for it (the same id again starts nothing)."""
        return await self.run(routes.send_event(event, event_id, payload))
