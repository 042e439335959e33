"""The orchestrator: REST API and workflow engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.common.app import ServiceScaffold
from services.common.http import error_body
from services.common.logging import get_logger
from services.common.settings import Settings
from services.orchestrator.api import (
    agents,
    alerts,
    audit,
    control,
    dlq,
    events,
    keys,
    missions,
    schedules,
    triggers,
    workflows,
)
from services.orchestrator.api.openapi import install_openapi
from services.orchestrator.audit import AuditTrail
from services.orchestrator.console import install_console
from services.orchestrator.engine.consumers import start_engine
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.errors import OrchestratorError, as_api_error
from services.orchestrator.ratelimit import RateLimiter
from services.orchestrator.seed import seed_agents
from services.orchestrator.state import STATE_KEY, OrchestratorState

log = get_logger(__name__)


def create_app(settings: Settings) -> FastAPI:
    scaffold = ServiceScaffold("orchestrator", settings)
    metrics = EngineMetrics(scaffold.registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            infra = await scaffold.open(stack, client_name="coo-orchestrator")
            engine, sessionmaker, bus = infra.engine, infra.sessionmaker, infra.bus
            await seed_agents(sessionmaker, settings.examples_dir / "agents")

            # Counts in memory, reconciled with the other replicas by its own task until shutdown.
            rate_limiter = await stack.enter_async_context(RateLimiter(engine, settings.rate_limit_per_minute))
            state = OrchestratorState(settings, engine, sessionmaker, bus, scaffold.registry, metrics, rate_limiter)
            await start_engine(state, stack)
            log.info("orchestrator_started", port=settings.orchestrator_port, bus_prefix=settings.bus_prefix)
            state.alerts = await alerts.start_alert_delivery(state, stack)
            yield {STATE_KEY: state}
            log.info("orchestrator_stopping")

    app = scaffold.create_app(
        lifespan,
        title="COO",
        summary="Run LLM agent workflows in production, and see and steer everything they do.",
        docs=True,
    )
    app.add_exception_handler(OrchestratorError, _refused)
    app.include_router(agents.router)
    app.include_router(workflows.router)
    app.include_router(missions.router)
    app.include_router(events.router)
    app.include_router(control.router)
    app.include_router(dlq.router)
    app.include_router(alerts.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    app.include_router(schedules.router)
    app.include_router(triggers.router)
    install_openapi(app)
    install_console(app)
    app.add_middleware(AuditTrail)
    return app


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    """A read or command's refusal, answered with COO's error body (404, 409 or 422)."""
    assert isinstance(exc, OrchestratorError)
    error = as_api_error(exc)
    return JSONResponse(error_body(error.error_type, error.message, error.field), status_code=error.status_code)
