"""Approval requests to Slack: every pending approval not yet announced is posted once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import Agent, Approval, Mission, Step
from services.common.logging import get_logger
from services.common.status import ApprovalStatus
from services.orchestrator.notify.slack import SlackNotifier

log = get_logger(__name__)

_INPUT_PREVIEW = 600
_LOCK_SPACE = 0x0C00_A991  # advisory-lock namespace of approval announcements


def approval_message(
    mission: Mission, step: Step, agent: Agent | None, api_url: str
) -> tuple[str, list[dict[str, Any]]]:
    """Block Kit text: which mission and step, what the step will do, and how to decide."""
    does = (agent.description if agent and agent.description else f"run agent '{step.agent}'").strip()
    preview = json.dumps(step.input or {}, indent=1, sort_keys=True, default=str)
    if len(preview) > _INPUT_PREVIEW:
        preview = preview[:_INPUT_PREVIEW] + "\n…"
    approve = f"coo approve {mission.id} {step.key}"
    reject = f"coo reject {mission.id} {step.key} --reason '…'"
    text = f"Approval needed: step '{step.key}' of mission {mission.id} ({mission.workflow_name})"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Approval needed"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Mission*\n`{mission.id}`"},
                {"type": "mrkdwn", "text": f"*Workflow*\n{mission.workflow_name} v{mission.workflow_version}"},
                {"type": "mrkdwn", "text": f"*Step*\n`{step.key}` (agent `{step.agent}`)"},
                {"type": "mrkdwn", "text": f"*Attempt*\n{step.attempt + 1}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*What it will do*\n{does}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Input*\n```{preview}```"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Approve*\n`{approve}`\n*Reject*\n`{reject}`"},
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"API: POST {api_url}/v1/missions/{mission.id}/steps/{step.key}/approve",
                }
            ],
        },
    ]
    return text, blocks


class ApprovalAnnouncer:
    """Posts each pending approval to Slack once, from its own task (a slow Slack never holds up
    the engine). A request is claimed with a transaction-scoped advisory lock — not a row lock, so
    deciding the approval meanwhile never waits on Slack — and ``notified_at`` is set only when
    Slack took the message; a failed post is tried again with a growing delay."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], slack: SlackNotifier, api_url: str, period_s: float
    ) -> None:
        self.sessionmaker = sessionmaker
        self.slack = slack
        self.api_url = api_url
        self.period_s = period_s
        self._retry_at: dict[uuid.UUID, tuple[float, float]] = {}  # approval -> (when, last delay)

    async def run(self) -> None:
        while True:
            try:
                await self.announce_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("approval_announcements_failed")
            await asyncio.sleep(self.period_s)

    async def announce_pending(self, *, limit: int = 20) -> int:
        """Post the pending approvals not announced yet; returns how many Slack took."""
        if not self.slack.enabled:
            return 0
        async with self.sessionmaker() as session:
            due = list(
                (
                    await session.execute(
                        select(Approval.id)
                        .where(Approval.status == ApprovalStatus.PENDING, Approval.notified_at.is_(None))
                        .order_by(Approval.created_at)
                        .limit(limit)
                    )
                ).scalars()
            )
        now = time.monotonic()
        posted = 0
        for approval_id in due:
            if self._retry_at.get(approval_id, (0.0, 0.0))[0] > now:
                continue
            posted += await self._announce(approval_id)
        return posted

    async def _announce(self, approval_id: uuid.UUID) -> int:
        async with self.sessionmaker() as session, session.begin():
            claimed = await session.scalar(
                select(func.pg_try_advisory_xact_lock(_LOCK_SPACE, func.hashtext(str(approval_id))))
            )
            if not claimed:
                return 0  # another replica is posting it
            row = (
                await session.execute(
                    select(Approval, Step, Mission)
                    .join(Step, Step.id == Approval.step_id)
                    .join(Mission, Mission.id == Approval.mission_id)
                    .where(
                        Approval.id == approval_id,
                        Approval.status == ApprovalStatus.PENDING,
                        Approval.notified_at.is_(None),
                    )
                )
            ).one_or_none()
            if row is None:
                return 0  # decided or announced meanwhile
            _, step, mission = row
            agent = (await session.execute(select(Agent).where(Agent.name == step.agent))).scalar_one_or_none()
            text, blocks = approval_message(mission, step, agent, self.api_url)
            delivery = await self.slack.post(text, blocks, colour="warning")
            if not delivery.ok:
                _, last = self._retry_at.get(approval_id, (0.0, self.period_s))
                delay = min(max(last * 2, self.period_s), 300.0)
                self._retry_at[approval_id] = (time.monotonic() + delay, delay)
                log.warning("approval_announce_failed", mission_id=str(mission.id), step=step.key, error=delivery.error)
                return 0
            await session.execute(
                update(Approval).where(Approval.id == approval_id).values(notified_at=datetime.now(UTC))
            )
        self._retry_at.pop(approval_id, None)
        return 1
