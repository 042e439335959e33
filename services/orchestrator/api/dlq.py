"""``/v1/dlq``: dead letters (messages that could not be handled, steps that exhausted their
attempts) and their replay."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query

from services.orchestrator.api.deps import CallerDep, OperatorDep, StateDep
from services.orchestrator.api.storable import storable_params
from services.orchestrator.commands.dlq import ReplayAnswer, replay_letter
from services.orchestrator.reads.dlq import DeadLetterPage, find_dead_letters

router = APIRouter(prefix="/v1/dlq", tags=["dead letters"], dependencies=[Depends(storable_params)])


@router.get("", summary="Dead letters, newest first (cursor paging)")
async def list_dead_letters(
    state: StateDep,
    _: CallerDep,
    mission_id: uuid.UUID | None = None,
    replayed: bool | None = Query(default=None, description="true: replayed only; false: not replayed yet"),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = None,
) -> DeadLetterPage:
    return await find_dead_letters(state, mission_id=mission_id, replayed=replayed, limit=limit, cursor=cursor)


@router.post(
    "/{dead_letter_id}/replay",
    status_code=202,
    summary="Replay a dead letter: a new attempt of its step, or its message published again",
    responses={
        404: {"description": "No such dead letter"},
        409: {"description": "Already replayed, or not replayable now"},
    },
)
async def replay_dead_letter(dead_letter_id: uuid.UUID, state: StateDep, caller: OperatorDep) -> ReplayAnswer:
    return await replay_letter(state, dead_letter_id, caller.name)
