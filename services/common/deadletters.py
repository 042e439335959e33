"""Dead letters: messages that can never be handled, kept whole for inspection and replay."""

from __future__ import annotations

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import DeadLetterSink
from services.common.db.models import DeadLetter
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.common.scrub import scrub_text

log = get_logger(__name__)


def dead_letter_sink(sessionmaker: async_sessionmaker[AsyncSession]) -> DeadLetterSink:
    """Store a message a consumer gave up on in ``dead_letters`` (subject, payload, headers, error)."""

    async def store(msg: Msg, error: str, deliveries: int) -> None:
        async with sessionmaker() as session, session.begin():
            session.add(
                DeadLetter(
                    subject=msg.subject,
                    payload=msg.data,
                    headers=dict(msg.headers or {}),
                    error=scrub_text(error),
                    error_type=ErrorType.VALIDATION if "decode" in error else ErrorType.INTERNAL,
                    attempts=deliveries,
                )
            )
        log.warning("dead_lettered", subject=msg.subject, error=error, deliveries=deliveries)

    return store
