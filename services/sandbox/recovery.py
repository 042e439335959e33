"""Crash recovery: runs left ``running`` by a sandbox instance that stopped heart-beating are failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import SandboxRun
from services.common.status import RunStatus


async def fail_stale_runs(sessionmaker: async_sessionmaker[AsyncSession], *, stale_after_s: float) -> int:
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(SandboxRun)
            .where(SandboxRun.status == RunStatus.RUNNING, SandboxRun.heartbeat_at < cutoff)
            .values(
                status=RunStatus.FAILED,
                finished_at=datetime.now(UTC),
                error=f"sandbox instance stopped (no heartbeat for over {stale_after_s:g}s)",
            )
            .returning(SandboxRun.id)
        )
        return len(result.all())
