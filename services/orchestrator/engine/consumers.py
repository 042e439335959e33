"""The engine's message consumers: results from the workers, and CONTROL on ``coo.control.<mission>``.

The REST API applies CONTROL in the request and publishes the command after commit as a
notification; the control consumer recognises such a command by its id (``control:<id>``) and
leaves it be, applies a command some other process published, and dead-letters what it cannot
decode. Both consumers, the housekeeper and the approval announcer are started here and stopped
by the lifespan's exit stack.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any, cast

import structlog
from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from services.common.bus import ConsumerLoop, Undeliverable
from services.common.contracts import Control, ResultMessage, StepError, StepStarted, WorkResult
from services.common.deadletters import dead_letter_sink
from services.common.errors import ErrorType
from services.common.logging import get_logger
from services.orchestrator.engine.approvals import ApprovalAnnouncer
from services.orchestrator.engine.control import apply_control
from services.orchestrator.engine.housekeeping import Housekeeper
from services.orchestrator.engine.results import apply_result, apply_started
from services.orchestrator.engine.schedules import ScheduleRunner
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.notify.slack import SlackNotifier
from services.orchestrator.state import OrchestratorState

log = get_logger(__name__)

# ResultMessage is an Annotated union (a discriminator): a value, not a class, to the type checker.
_results: TypeAdapter[StepStarted | WorkResult] = TypeAdapter(cast(Any, ResultMessage))


async def start_engine(state: OrchestratorState, stack: AsyncExitStack) -> None:
    """Open the results consumer and start it and the housekeeper; ``stack`` stops them."""
    settings = state.settings
    store_dead_letter = dead_letter_sink(state.sessionmaker)
    stack.push_async_callback(state.close)  # last: after the consumers below have stopped

    def decode(msg: Msg) -> StepStarted | WorkResult:
        try:
            return _results.validate_json(msg.data)
        except ValidationError as exc:
            raise Undeliverable(f"cannot decode result message: {exc.errors()[0]['msg']}") from exc

    async def handle_result(msg: Msg) -> None:
        message = decode(msg)
        with structlog.contextvars.bound_contextvars(
            mission_id=str(message.mission_id), step_id=str(message.step_id), attempt=message.attempt
        ):

            async def apply(uow: UnitOfWork) -> None:
                if isinstance(message, StepStarted):
                    await apply_started(uow, message)
                else:
                    await apply_result(uow, settings, message)

            # Committed with the results that came with it; in mission order within the batch.
            await state.results.run(apply, key=str(message.mission_id))

    async def give_up(msg: Msg, error: str, deliveries: int) -> None:
        """A result that cannot be applied: keep it, and fail its attempt so the mission moves on."""
        await store_dead_letter(msg, error, deliveries)
        try:
            message = decode(msg)
        except Undeliverable:
            return  # kept as a dead letter; there is no attempt to fail
        if isinstance(message, WorkResult):
            failed = WorkResult(
                mission_id=message.mission_id,
                step_id=message.step_id,
                attempt=message.attempt,
                result_id=message.result_id,
                success=False,
                error=StepError(type=ErrorType.INTERNAL, message=f"could not apply the attempt's result: {error}"),
            )
            async with state.unit() as uow:
                await apply_result(uow, settings, failed)

    results = ConsumerLoop(
        bus=state.bus,
        stream=state.bus.subjects.events_stream,
        durable="orchestrator-results",
        filter_subject=state.bus.subjects.results,
        handler=handle_result,
        dead_letter=store_dead_letter,
        give_up=give_up,
        concurrency=64,  # results are applied in shared transactions: many in hand make the batches
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        name="results",
    )
    await results.open()

    async def handle_control(msg: Msg) -> None:
        try:
            command = Control.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Undeliverable(f"cannot decode control message: {exc.errors()[0]['msg']}") from exc
        control_id = (msg.headers or {}).get("Nats-Msg-Id", "").removeprefix("control:") or uuid.uuid4().hex
        async with state.unit() as uow:
            outcome = await apply_control(uow, settings, command, control_id)
        log.info(
            "control_handled",
            mission_id=str(command.mission_id),
            action=command.action,
            applied=outcome.applied,
            message=outcome.message,
        )

    # Its own durable consumer: CONTROL is never stuck behind a backlog of results.
    controls = ConsumerLoop(
        bus=state.bus,
        stream=state.bus.subjects.events_stream,
        durable="orchestrator-control",
        filter_subject=state.bus.subjects.control_all,
        handler=handle_control,
        dead_letter=store_dead_letter,
        concurrency=4,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        name="control",
    )
    await controls.open()
    slack = await stack.enter_async_context(SlackNotifier(settings.slack_webhook_url))
    housekeeper = Housekeeper(settings, state.sessionmaker, state.bus, state.metrics, state.rate_limiter)
    announcer = ApprovalAnnouncer(state.sessionmaker, slack, settings.api_url, settings.engine_tick_s)
    schedule_runner = ScheduleRunner(settings, state.sessionmaker, state.bus, state.metrics)
    tasks = [
        asyncio.create_task(results.run(), name="results-consumer"),
        asyncio.create_task(controls.run(), name="control-consumer"),
        asyncio.create_task(housekeeper.run(), name="housekeeping"),
        asyncio.create_task(announcer.run(), name="approval-announcements"),
        asyncio.create_task(schedule_runner.run(), name="schedules"),
    ]

    async def stop() -> None:
        await _cancel(tasks)
        await results.drain()
        await controls.drain()

    stack.push_async_callback(stop)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the engine's tasks and wait for them; one that had failed is logged with its name."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            continue
        except Exception:
            log.exception("engine_task_failed", task=task.get_name())
