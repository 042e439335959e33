"""Dead letters: messages that can never be handled, kept whole for inspection and replay."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import DeadLetterSink
from services.common.db.models import DeadLetter
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.common.scrub import scrub, scrub_text

log = get_logger(__name__)

REPLAY_OF_HEADER = "Coo-Replay-Of"


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _scrubbed(payload: bytes) -> bytes:
    """The payload with secrets redacted: re-encoded when it is JSON, else as text when it is text."""
    try:
        return orjson.dumps(scrub(orjson.loads(payload)))
    except orjson.JSONDecodeError:
        pass
    try:
        return scrub_text(payload.decode()).encode()
    except UnicodeDecodeError:
        return payload  # binary: kept as received, shown as base64


def _ids(payload: bytes) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """The mission and step a message speaks of, when it is readable JSON that names them."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    return _uuid(body.get("mission_id")), _uuid(body.get("step_id"))


def dead_letter_sink(sessionmaker: async_sessionmaker[AsyncSession]) -> DeadLetterSink:
    """Store a message a consumer gave up on in ``dead_letters`` (subject, payload, headers, error)."""

    async def store(msg: Msg, error: str, deliveries: int) -> None:
        headers = scrub(dict(msg.headers or {}))
        mission_id, step_id = _ids(msg.data)
        async with sessionmaker() as session, session.begin():
            session.add(
                DeadLetter(
                    subject=msg.subject,
                    payload=_scrubbed(msg.data),
                    headers=headers,
                    error=scrub_text(error),
                    error_type=ErrorType.VALIDATION if "decode" in error else ErrorType.INTERNAL,
                    attempts=deliveries,
                    mission_id=mission_id,
                    step_id=step_id,
                    replay_of=_uuid(headers.get(REPLAY_OF_HEADER)),
                )
            )
        log.warning("dead_lettered", subject=msg.subject, error=error, deliveries=deliveries)

    return store
