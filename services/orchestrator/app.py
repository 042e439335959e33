"""The orchestrator: REST API and workflow engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
from services.orchestrator.console import install_console
from services.orchestrator.engine.consumers import start_engine
from services.orchestrator.engine.metrics import EngineMetrics
from services.orchestrator.errors import OrchestratorError, as_api_error
from services.orchestrator.ratelimit import RateLimiter
from services.orchestrator.seed import seed_agents
from services.orchestrator.state import STATE_KEY, OrchestratorState

log = get_logger(__name__)


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
            await start_engine(state, stack)
            log.info("orchestrator_started", port=settings.orchestrator_port, bus_prefix=settings.bus_prefix)
            state.alerts = await alerts.start_alert_delivery(state, stack)
            yield {STATE_KEY: state}
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
