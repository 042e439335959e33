"""The orchestrator: REST API and workflow engine."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from services.common.bus import ConsumerLoop, Undeliverable
from services.common.contracts import Control, ResultMessage, StepError, StepStarted, WorkResult
from services.common.deadletters import dead_letter_sink
from services.common.errors import ErrorType
from services.common.http import (
    HttpMetrics,
    error_body,
    infra_checks,
    install_error_handlers,
    install_health_routes,
    install_http_metrics,
)
from services.common.infra import open_infra
from services.common.logging import get_logger
from services.common.runtime_metrics import register_pool_metrics, service_registry
from services.common.settings import Settings
from services.common.telemetry import Telemetry, instrument_app, instrument_engine
from services.orchestrator.api import agents, alerts, audit, control, dlq, events, keys, missions, workflows
from services.orchestrator.audit import AuditTrail
from services.orchestrator.auth import KeyStore
from services.orchestrator.console import install_console
from services.orchestrator.engine.approvals import ApprovalAnnouncer
from services.orchestrator.engine.control import apply_control
from services.orchestrator.engine.housekeeping import Housekeeper
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.engine.results import apply_result, apply_started
from services.orchestrator.engine.unit import UnitOfWork
from services.orchestrator.errors import OrchestratorError, as_api_error
from services.orchestrator.notify.slack import SlackNotifier
from services.orchestrator.ratelimit import RateLimiter
from services.orchestrator.seed import seed_agents
from services.orchestrator.state import OrchestratorState

log = get_logger(__name__)

# ResultMessage is an Annotated union (a discriminator): a value, not a class, to the type checker.
_results: TypeAdapter[StepStarted | WorkResult] = TypeAdapter(cast(Any, ResultMessage))


def create_app(settings: Settings) -> FastAPI:
    registry = service_registry()
    http_metrics = HttpMetrics(registry)
    metrics = EngineMetrics(registry)
    holder: dict[str, object] = {}
    register_pool_metrics(registry, holder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Telemetry("orchestrator", registry))
            infra = await open_infra(stack, settings, client_name="coo-orchestrator", resources=holder)
            engine, sessionmaker, bus = infra.engine, infra.sessionmaker, infra.bus
            instrument_engine(engine)
            await seed_agents(sessionmaker, settings.examples_dir / "agents")

            state = OrchestratorState(
                settings,
                engine,
                sessionmaker,
                bus,
                registry,
                metrics,
                RateLimiter(engine, settings.rate_limit_per_minute),
            )
            await _start_engine(state, stack)
            log.info("orchestrator_started", port=settings.orchestrator_port, bus_prefix=settings.bus_prefix)
            alert_delivery = await alerts.start_alert_delivery(state, stack)
            yield {"coo": state, "keys": KeyStore(settings, state.reads), "alerts": alert_delivery}
            log.info("orchestrator_stopping")

    app = FastAPI(
        title="COO",
        version="0.1.0",
        summary="Run LLM agent workflows in production, and see and steer everything they do.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_exception_handler(OrchestratorError, _refused)
    install_http_metrics(app, http_metrics, "orchestrator")
    instrument_app(app)

    install_health_routes(app, checks=infra_checks(holder), registry=registry)
    app.include_router(agents.router)
    app.include_router(workflows.router)
    app.include_router(missions.router)
    app.include_router(events.router)
    app.include_router(control.router)
    app.include_router(dlq.router)
    app.include_router(alerts.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    install_console(app)
    app.add_middleware(AuditTrail)
    return app


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    """A read or command's refusal, answered with COO's error body (404, 409 or 422)."""
    assert isinstance(exc, OrchestratorError)
    error = as_api_error(exc)
    return JSONResponse(error_body(error.error_type, error.message, error.field), status_code=error.status_code)


async def _start_engine(state: OrchestratorState, stack: AsyncExitStack) -> None:
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
    tasks = [
        asyncio.create_task(results.run(), name="results-consumer"),
        asyncio.create_task(controls.run(), name="control-consumer"),
        asyncio.create_task(housekeeper.run(), name="housekeeping"),
        asyncio.create_task(announcer.run(), name="approval-announcements"),
    ]

    async def stop() -> None:
        await _cancel(tasks)
        await results.drain()
        await controls.drain()

    stack.push_async_callback(stop)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
