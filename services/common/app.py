"""What every COO service's app is made of, in one place: its Prometheus registry (with the process
and pool collectors), telemetry, Postgres and NATS opened for the lifespan, the FastAPI app with
COO's error bodies, HTTP metrics, OTel instrumentation and the ``/healthz``, ``/readyz`` and
``/metrics`` routes.

    scaffold = ServiceScaffold("worker", settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            infra = await scaffold.open(stack, client_name="coo-worker")
            ...
            yield

    app = scaffold.create_app(lifespan, title="COO agent worker")
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack

from fastapi import FastAPI
from starlette.types import Lifespan

from services.common.http import (
    HttpMetrics,
    ReadinessCheck,
    infra_checks,
    install_error_handlers,
    install_health_routes,
    install_http_metrics,
)
from services.common.infra import Infra, open_infra
from services.common.resources import ServiceResources
from services.common.runtime_metrics import register_pool_metrics, service_registry
from services.common.settings import Settings
from services.common.telemetry import Telemetry, instrument_engine, instrument_http_clients, server_telemetry

VERSION = "0.1.0"


class ServiceScaffold:
    """One service's shared parts. ``registry`` takes the service's own metrics; ``resources`` holds
    what the lifespan has opened (the readiness checks and the pool metrics read it)."""

    def __init__(self, service: str, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.registry = service_registry()
        self.resources = ServiceResources()
        register_pool_metrics(self.registry, self.resources)
        self._http_metrics = HttpMetrics(self.registry)

    async def open(self, stack: AsyncExitStack, *, client_name: str, pool_size: int | None = None) -> Infra:
        """Start telemetry, open Postgres (checked to be migrated) and NATS (streams ensured), and
        instrument the engine; ``stack`` closes them all, in reverse order."""
        await stack.enter_async_context(Telemetry(self.service, self.registry))
        infra = await open_infra(
            stack, self.settings, client_name=client_name, resources=self.resources, pool_size=pool_size
        )
        instrument_engine(infra.engine, statements=self.settings.trace_sql)
        return infra

    def create_app(
        self,
        lifespan: Lifespan[FastAPI],
        *,
        title: str,
        summary: str | None = None,
        docs: bool = False,
        checks: Mapping[str, ReadinessCheck] | None = None,
    ) -> FastAPI:
        """The FastAPI app with the shared middleware and routes; ``checks`` add readiness checks to
        Postgres' and NATS'. ``docs`` serves ``/docs`` and ``/redoc`` (the public API does)."""
        app = FastAPI(
            title=title,
            version=VERSION,
            summary=summary,
            lifespan=lifespan,
            docs_url="/docs" if docs else None,
            redoc_url="/redoc" if docs else None,
            telemetry=server_telemetry(),
        )
        install_error_handlers(app)
        install_http_metrics(app, self._http_metrics, self.service)
        instrument_http_clients()
        install_health_routes(app, checks={**infra_checks(self.resources), **(checks or {})}, registry=self.registry)
        return app
