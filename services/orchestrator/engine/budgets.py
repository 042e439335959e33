"""Budgets: every result adds its tokens and USD to the mission; at 80% a ``budget.warning`` event,
past 100% the mission pauses with reason ``budget_exceeded`` until resumed with more budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.common.contracts import WorkResult
from services.common.db.models import Mission
from services.common.money import plain, plain_or_none
from services.common.status import MissionStatus
from services.common.telemetry import exemplar
from services.orchestrator.engine.transitions import move_mission, record
from services.orchestrator.engine.unit import UnitOfWork

BUDGET_EXCEEDED = "budget_exceeded"
WARNING_RATIO = Decimal("0.8")


def _ratios(mission: Mission) -> list[tuple[str, Decimal]]:
    """(kind, spent / budget) for each budget the mission has."""
    ratios: list[tuple[str, Decimal]] = []
    if mission.budget_usd is not None:
        spent = mission.spent_usd or Decimal(0)
        ratio = spent / mission.budget_usd if mission.budget_usd > 0 else (Decimal(1) if spent == 0 else Decimal(2))
        ratios.append(("usd", ratio))
    if mission.budget_tokens is not None:
        spent_t = Decimal(mission.spent_tokens)
        budget_t = Decimal(mission.budget_tokens)
        ratios.append(("tokens", spent_t / budget_t if budget_t > 0 else (Decimal(1) if spent_t == 0 else Decimal(2))))
    return ratios


def exceeded(mission: Mission) -> list[str]:
    """Which budgets the mission has spent past 100%."""
    return [kind for kind, ratio in _ratios(mission) if ratio > 1]


def account(uow: UnitOfWork, mission: Mission, result: WorkResult) -> None:
    """Add one attempt's spend; warn when crossing 80%, pause when past 100%."""
    before = dict(_ratios(mission))
    mission.spent_tokens += result.tokens_in + result.tokens_out + result.cache_read_tokens + result.cache_write_tokens
    mission.spent_usd = (mission.spent_usd or Decimal(0)) + (result.cost_usd or Decimal(0))
    for kind, ratio in _ratios(mission):
        if before.get(kind, Decimal(0)) < WARNING_RATIO <= ratio:
            record(
                uow, mission.id, "budget.warning", budget=kind, spent_ratio=float(round(ratio, 4)), **_spend(mission)
            )
    over = exceeded(mission)
    if result.cost_usd is None and mission.budget_usd is not None:
        # A model with no known price: its spend cannot be counted, so the budget cannot be kept.
        record(uow, mission.id, "budget.cost_unknown", model=result.model, attempt=result.attempt, **_spend(mission))
        over = [*over, "usd (cost unknown)"]
    if over and mission.status == MissionStatus.PAUSED and mission.pause_reason != BUDGET_EXCEEDED:
        # Paused by hand while this attempt ran: it now waits for budget too.
        mission.pause_reason = BUDGET_EXCEEDED
        record(uow, mission.id, "budget.exceeded", budgets=over, **_spend(mission))
    elif over and mission.status == MissionStatus.RUNNING:
        move_mission(uow, mission, MissionStatus.PAUSED, reason=BUDGET_EXCEEDED, budgets=over, **_spend(mission))
        mission.pause_reason = BUDGET_EXCEEDED
        record(uow, mission.id, "budget.exceeded", budgets=over, **_spend(mission))
        workflow = mission.workflow_name
        uow.after_commit(lambda metrics: metrics.budget_exceeded.labels(workflow=workflow).inc(exemplar=exemplar()))


def _spend(mission: Mission) -> dict[str, Any]:
    return {
        "spent_usd": plain(mission.spent_usd),
        "budget_usd": plain_or_none(mission.budget_usd),
        "spent_tokens": mission.spent_tokens,
        "budget_tokens": mission.budget_tokens,
    }


def add_budget(mission: Mission, usd: Decimal | None, tokens: int | None) -> None:
    """Raise the mission's budgets (a mission with no budget of that kind gets one: spent + added)."""
    if usd is not None:
        base = mission.budget_usd if mission.budget_usd is not None else (mission.spent_usd or Decimal(0))
        mission.budget_usd = base + usd
    if tokens is not None:
        base_t = mission.budget_tokens if mission.budget_tokens is not None else mission.spent_tokens
        mission.budget_tokens = base_t + tokens


# Column limits: Numeric(18, 8) for USD, BIGINT for tokens.
MAX_USD = Decimal("9999999999.99999999")
MAX_TOKENS = 2**63 - 1


def overflow(mission: Mission, usd: Decimal | None, tokens: int | None) -> str | None:
    """Why adding ``usd`` / ``tokens`` would leave a budget larger than it can be stored, or None."""
    if usd is not None:
        base = mission.budget_usd if mission.budget_usd is not None else (mission.spent_usd or Decimal(0))
        if base + usd > MAX_USD:
            return f"add_budget_usd: the budget would pass the largest storable amount ({MAX_USD} USD)"
    if tokens is not None:
        base_t = mission.budget_tokens if mission.budget_tokens is not None else mission.spent_tokens
        if base_t + tokens > MAX_TOKENS:
            return f"add_budget_tokens: the budget would pass the largest storable count ({MAX_TOKENS})"
    return None


def shortfall(mission: Mission, usd: Decimal | None, tokens: int | None) -> str | None:
    """Why the mission would still be over budget after adding ``usd`` / ``tokens``, or None."""
    problems: list[str] = []
    spent_usd = mission.spent_usd or Decimal(0)
    if mission.budget_usd is not None and spent_usd >= mission.budget_usd + (usd or Decimal(0)):
        problems.append(f"spent {spent_usd} USD of a {mission.budget_usd + (usd or Decimal(0))} USD budget")
    if mission.budget_tokens is not None and mission.spent_tokens >= mission.budget_tokens + (tokens or 0):
        problems.append(
            f"spent {mission.spent_tokens} tokens of a {mission.budget_tokens + (tokens or 0)} token budget"
        )
    return "; ".join(problems) or None
