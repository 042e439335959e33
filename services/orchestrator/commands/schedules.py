"""Schedules: create, change, pause, resume, delete; fire one now; backfill a range of fire times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.models import Schedule
from services.common.money import amount_schema
from services.common.scrub import scrub
from services.common.status import FireKind, Overlap
from services.orchestrator.auth import Caller
from services.orchestrator.engine.cadence import Cadence
from services.orchestrator.engine.missions import find_workflow_ref
from services.orchestrator.engine.schedules import Fire, fire, set_next_fire
from services.orchestrator.errors import Conflict, InvalidInput, NotFound
from services.orchestrator.reads.schedules import FIRES_SHOWN, FireOut, ScheduleOut, recent_fires, schedule_out
from services.orchestrator.state import OrchestratorState
from services.orchestrator.storable import require_storable

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_BACKFILL = 1000  # fire times per backfill request
_DAY_S = 86_400.0
_REQUIRED = ("workflow", "timezone", "input", "overlap", "catchup_window_s", "jitter_s", "paused", "priority")


def _not_null(schema: dict[str, Any]) -> None:
    """A field a change may leave out but not set to null (``_REQUIRED``), documented so."""
    if "anyOf" in schema:
        schema["anyOf"] = [branch for branch in schema["anyOf"] if branch.get("type") != "null"]
        schema.pop("default", None)


class ScheduleFields(BaseModel):
    """What a schedule can be told, on creation or in a change (``None``: unchanged)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: str | None = Field(default=None, min_length=1, max_length=100, json_schema_extra=_not_null)
    version: int | None = Field(default=None, ge=1, le=2_147_483_647, description="None: the latest at each fire")
    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="5 fields (minute hour day month weekday), or 6 with seconds first",
        examples=["0 3 * * *"],
    )
    interval_s: float | None = Field(default=None, ge=1, le=366 * _DAY_S, description="Every N seconds (epoch-aligned)")
    timezone: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["UTC", "Europe/Paris"], json_schema_extra=_not_null
    )
    input: dict[str, Any] | None = Field(default=None, json_schema_extra=_not_null)
    overlap: Overlap | None = Field(default=None, json_schema_extra=_not_null)
    catchup_window_s: float | None = Field(default=None, ge=0, le=366 * _DAY_S, json_schema_extra=_not_null)
    jitter_s: float | None = Field(default=None, ge=0, le=_DAY_S, json_schema_extra=_not_null)
    paused: bool | None = Field(default=None, json_schema_extra=_not_null)
    priority: int | None = Field(default=None, ge=-1000, le=1000, json_schema_extra=_not_null)
    budget_usd: Decimal | None = Field(
        default=None, ge=0, max_digits=18, decimal_places=8, json_schema_extra=amount_schema
    )
    budget_tokens: int | None = Field(default=None, ge=0, le=2**62)


class ScheduleCreate(ScheduleFields):
    name: str = Field(pattern=NAME_PATTERN, examples=["nightly-repo-health"])
    workflow: str = Field(min_length=1, max_length=100)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)
    overlap: Overlap = Overlap.SKIP
    catchup_window_s: float = Field(default=3600.0, ge=0, le=366 * _DAY_S)
    jitter_s: float = Field(default=0.0, ge=0, le=_DAY_S)
    paused: bool = False
    priority: int = Field(default=0, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleCreate:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of 'cron' and 'interval_s'")
        return self


class ScheduleChange(ScheduleFields):
    """``PATCH``: the fields to change. Giving ``cron`` clears ``interval_s`` and the reverse."""

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleChange:
        if self.cron is not None and self.interval_s is not None:
            raise ValueError("give at most one of 'cron' and 'interval_s'")
        return self


class BackfillRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: AwareDatetime = Field(description="First fire time considered (with a UTC offset)")
    end: AwareDatetime = Field(description="Last fire time considered (inclusive)")


class FiresOut(BaseModel):
    schedule: str
    fires: list[FireOut]


async def create_schedule(state: OrchestratorState, body: ScheduleCreate, caller: Caller) -> ScheduleOut:
    """A new schedule (409 when the name is taken); it first fires at the next fire time after now."""
    require_storable(body.model_dump(mode="json"), "body")
    cadence = Cadence(cron=body.cron, interval_s=body.interval_s, timezone=body.timezone)
    now = datetime.now(UTC)
    async with state.unit() as uow:
        await _require_workflow(uow.session, body.workflow, body.version)
        schedule = Schedule(
            name=body.name,
            workflow=body.workflow,
            workflow_version=body.version,
            cron=body.cron,
            interval_s=body.interval_s,
            timezone=body.timezone,
            input=scrub(body.input),
            overlap=body.overlap,
            catchup_window_s=body.catchup_window_s,
            jitter_s=body.jitter_s,
            paused=body.paused,
            priority=body.priority,
            budget_usd=body.budget_usd,
            budget_tokens=body.budget_tokens,
            caller=caller.name,
            created_at=now,
            updated_at=now,
        )
        schedule.id = uuid.uuid4()
        set_next_fire(schedule, now, cadence)
        uow.session.add(schedule)
        try:
            await uow.session.flush()
        except IntegrityError as exc:
            raise Conflict(f"schedule '{body.name}' exists already", field="name") from exc
        return schedule_out(schedule, [])


async def change_schedule(state: OrchestratorState, name: str, body: ScheduleChange) -> ScheduleOut:
    """Change the given fields; a new cadence (or a resume) starts at its next fire time after now."""
    require_storable(body.model_dump(mode="json", exclude_unset=True), "body")
    changes = body.model_dump(exclude_unset=True)
    for key in _REQUIRED:
        if key in changes and changes[key] is None:
            raise InvalidInput(f"{key}: cannot be null", field=key)
    async with state.unit() as uow:
        schedule = await _lock(uow.session, name)
        if "workflow" in changes or "version" in changes:
            await _require_workflow(
                uow.session,
                changes.get("workflow", schedule.workflow),
                changes.get("version", schedule.workflow_version),
            )
        if "cron" in changes and changes["cron"] is not None:
            changes["interval_s"] = None
        elif "interval_s" in changes and changes["interval_s"] is not None:
            changes["cron"] = None
        for field, value in changes.items():
            column = "workflow_version" if field == "version" else field
            setattr(schedule, column, scrub(value) if field == "input" else value)
        cadence = Cadence(cron=schedule.cron, interval_s=schedule.interval_s, timezone=schedule.timezone)
        now = datetime.now(UTC)
        schedule.updated_at = now
        resumed = changes.get("paused") is False
        if resumed or {"cron", "interval_s", "timezone", "jitter_s"} & changes.keys():
            set_next_fire(schedule, now, cadence)
        fires = await recent_fires(uow.session, [schedule.id], FIRES_SHOWN)
        return schedule_out(schedule, fires.get(schedule.id, []))


async def pause_schedule(state: OrchestratorState, name: str, paused: bool) -> ScheduleOut:
    """Pause (nothing fires) or resume (from the next fire time after now); idempotent."""
    return await change_schedule(state, name, ScheduleChange(paused=paused))


async def delete_schedule(state: OrchestratorState, name: str) -> None:
    """Delete a schedule and its record of fire times; the missions it started stay."""
    async with state.unit() as uow:
        await uow.session.delete(await _lock(uow.session, name))


async def trigger_schedule(state: OrchestratorState, name: str) -> FiresOut:
    """Fire now, by the schedule's overlap policy (paused or not)."""
    async with state.unit() as uow:
        schedule = await _lock(uow.session, name)
        state.metrics.prepare_schedule(schedule.name)
        fired = await fire(uow, state.settings, schedule, datetime.now(UTC), FireKind.MANUAL)
    return FiresOut(schedule=name, fires=[_fire_out(fired)])


async def backfill_schedule(state: OrchestratorState, name: str, body: BackfillRequest) -> FiresOut:
    """A fire for every fire time in ``[start, end]``, oldest first, by the overlap policy; fire
    times that happened already are answered as they were."""
    if body.end < body.start:
        raise InvalidInput("end: before start", field="end")
    async with state.unit() as uow:
        schedule = await _lock(uow.session, name)
        times = Cadence(cron=schedule.cron, interval_s=schedule.interval_s, timezone=schedule.timezone).between(
            body.start, body.end, MAX_BACKFILL
        )
        if len(times) > MAX_BACKFILL:
            raise InvalidInput(f"end: the range holds more than {MAX_BACKFILL} fire times; backfill it in parts")
        state.metrics.prepare_schedule(schedule.name)
        fires = [await fire(uow, state.settings, schedule, moment, FireKind.BACKFILL) for moment in times]
    return FiresOut(schedule=name, fires=[_fire_out(one) for one in fires])


def _fire_out(one: Fire) -> FireOut:
    return FireOut(
        fire_time=one.fire_time, kind=one.kind, outcome=one.outcome, mission_id=one.mission_id, error=one.error
    )


async def _lock(session: AsyncSession, name: str) -> Schedule:
    schedule = (
        await session.execute(select(Schedule).where(Schedule.name == name).with_for_update())
    ).scalar_one_or_none()
    if schedule is None:
        raise NotFound(f"schedule '{name}' not found", field="name")
    return schedule


async def _require_workflow(session: AsyncSession, workflow: str, version: int | None) -> None:
    try:
        await find_workflow_ref(session, workflow, version)
    except NotFound as exc:
        raise InvalidInput(f"workflow: {exc.message}", field="workflow") from exc
