"""``/v1/dlq``: dead letters (messages that could not be handled, steps that exhausted their
attempts) and their replay."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query

from services.common.http import error_responses
from services.orchestrator.api.deps import (
    KEY_ERRORS,
    SCOPE_ERRORS,
    CallerDep,
    OperatorDep,
    StateDep,
    operation_id,
    responses,
)
from services.orchestrator.api.storable import storable_params
from services.orchestrator.commands.dlq import ReplayAnswer, replay_letter
from services.orchestrator.reads.dlq import DeadLetterPage, find_dead_letters
from services.orchestrator.reads.paging import CURSOR_DESCRIPTION, CURSOR_PATTERN

router = APIRouter(
    prefix="/v1/dlq",
    tags=["dead letters"],
    dependencies=[Depends(storable_params)],
    responses=KEY_ERRORS,
    generate_unique_id_function=operation_id,
)


@router.get("", summary="Dead letters, newest first (cursor paging)")
async def list_dead_letters(
    state: StateDep,
    _: CallerDep,
    mission_id: uuid.UUID | None = None,
    replayed: bool | None = Query(default=None, description="true: replayed only; false: not replayed yet"),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, pattern=CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
) -> DeadLetterPage:
    return await find_dead_letters(state, mission_id=mission_id, replayed=replayed, limit=limit, cursor=cursor)


@router.post(
    "/{dead_letter_id}/replay",
    status_code=202,
    summary="Replay a dead letter: a new attempt of its step, or its message published again",
    responses=responses(
        SCOPE_ERRORS,
        error_responses(
            404, 409, described={404: "No such dead letter", 409: "Already replayed, or not replayable now"}
        ),
    ),
)
async def replay_dead_letter(dead_letter_id: uuid.UUID, state: StateDep, caller: OperatorDep) -> ReplayAnswer:
    return await replay_letter(state, dead_letter_id, caller.name)
