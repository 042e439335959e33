"""``GET /v1/missions/{id}/events``: the timeline live, as Server-Sent Events.

Each event's SSE id is its timeline id, so a client that reconnects with ``Last-Event-ID`` gets
exactly what it missed. Live events come from the ``coo.timeline.<mission>`` fan-out; the table is
read after each fan-out signal and every few seconds, so nothing is skipped or reordered. The stream ends
with an ``end`` event once the mission is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from nats.aio.msg import Msg

from services.common.http import ApiError, error_responses
from services.common.status import MISSION_TERMINAL
from services.orchestrator.api.deps import KEY_ERRORS, CallerDep, StateDep, operation_id
from services.orchestrator.api.storable import storable_params
from services.orchestrator.reads.missions import EVENTS_PAGE, events_after, require_mission
from services.orchestrator.state import OrchestratorState

router = APIRouter(
    prefix="/v1/missions",
    tags=["missions"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)

RESYNC_S = 3.0


def _event(row: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(id=str(row["id"]), event=str(row["type"]), data=row)


MAX_EVENT_ID = 2**63 - 1


async def _start_after(
    mission_id: uuid.UUID,
    state: StateDep,
    _: CallerDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$", description="The last event id seen (resumes after it)"
        ),
    ] = None,
    after: int = Query(
        default=0, ge=0, le=MAX_EVENT_ID, description="Start after this timeline id (Last-Event-ID wins)"
    ),
) -> int:
    """Checked before the stream starts, so that a bad request still gets a plain error answer."""
    start = after
    if last_event_id:
        try:
            start = int(last_event_id)
            if not 0 <= start <= MAX_EVENT_ID:
                raise ValueError(last_event_id)
        except ValueError as exc:
            raise ApiError(
                422, "validation", "Last-Event-ID: not an event id of this stream", field="Last-Event-ID"
            ) from exc
    await require_mission(state, mission_id)
    return start


@router.get(
    "/{mission_id}/events",
    response_class=EventSourceResponse,
    summary="The mission's timeline live (SSE; Last-Event-ID resumes; ends with an 'end' event)",
    responses=error_responses(404, described={404: "No such mission"}),
)
async def stream_mission_events(
    mission_id: uuid.UUID, state: StateDep, start: Annotated[int, Depends(_start_after)]
) -> AsyncIterator[ServerSentEvent]:
    async for event in _stream(state, mission_id, start):
        yield event


async def _stream(state: OrchestratorState, mission_id: uuid.UUID, start: int) -> AsyncIterator[ServerSentEvent]:
    """Read the table after every fan-out signal (or every ``RESYNC_S``): the fan-out says *when*
    to look, the table says *what* happened, in order, with nothing skipped."""
    wake = asyncio.Event()

    async def on_event(_: Msg) -> None:
        wake.set()

    sub = await state.bus.nc.subscribe(state.bus.subjects.timeline(mission_id), cb=on_event)
    last = start
    try:
        while True:
            wake.clear()
            events, status = await events_after(state, mission_id, last)
            for event in events:
                last = event["id"]
                yield _event(event)
            if len(events) == EVENTS_PAGE:
                continue  # more to read before anything else
            if status in MISSION_TERMINAL:
                yield ServerSentEvent(event="end", data={"mission_id": str(mission_id), "status": status})
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_S):
                    await wake.wait()
    finally:
        await sub.unsubscribe()
