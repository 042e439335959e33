"""Approval requests to Slack: every pending approval not yet announced is posted once.

Runs from the housekeeping loop (and right after an approval is created), claims rows with
``FOR UPDATE SKIP LOCKED`` so replicas never post the same request twice, and marks
``notified_at`` only when Slack took the message — so a failed post is tried again later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.db.models import Agent, Approval, Mission, Step
from services.common.logging import get_logger
from services.orchestrator.notify.slack import SlackNotifier

log = get_logger(__name__)

_INPUT_PREVIEW = 600


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


async def announce_pending(
    sessionmaker: async_sessionmaker[AsyncSession], slack: SlackNotifier, api_url: str, *, limit: int = 20
) -> int:
    """Post the pending approvals not announced yet; returns how many Slack took."""
    if not slack.enabled:
        return 0
    posted = 0
    async with sessionmaker() as session, session.begin():
        rows = (
            await session.execute(
                select(Approval, Step, Mission)
                .join(Step, Step.id == Approval.step_id)
                .join(Mission, Mission.id == Approval.mission_id)
                .where(Approval.status == "pending", Approval.notified_at.is_(None))
                .order_by(Approval.created_at)
                .limit(limit)
                .with_for_update(of=Approval, skip_locked=True)
            )
        ).all()
        if not rows:
            return 0
        agents = {
            a.name: a
            for a in (
                await session.execute(select(Agent).where(Agent.name.in_({s.agent for _, s, _ in rows})))
            ).scalars()
        }
        for approval, step, mission in rows:
            text, blocks = approval_message(mission, step, agents.get(step.agent), api_url)
            delivery = await slack.post(text, blocks, colour="warning")
            if delivery.ok:
                approval.notified_at = datetime.now(UTC)
                posted += 1
            else:
                log.warning("approval_announce_failed", mission_id=str(mission.id), step=step.key, error=delivery.error)
    return posted
