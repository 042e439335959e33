"""The shared app scaffold, without a lifespan: health routes, readiness that fails until the
lifespan has opened Postgres and NATS (naming what is missing), extra checks, and the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from services.common.app import ServiceScaffold
from services.common.settings import Settings


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


async def test_a_service_is_not_ready_before_its_lifespan_opened_anything() -> None:
    scaffold = ServiceScaffold("sandbox", Settings())

    async def isolation() -> None:
        raise RuntimeError("isolation not probed yet")

    app = scaffold.create_app(_no_lifespan, title="COO sandbox", checks={"isolation": isolation})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {
            "postgres": "down: RuntimeError: Postgres is not open yet",
            "nats": "down: RuntimeError: NATS is not connected yet",
            "isolation": "down: RuntimeError: isolation not probed yet",
        }
        assert (await client.get("/docs")).status_code == 404
        metrics = (await client.get("/metrics")).text
        assert 'coo_http_requests_total{method="GET",route="/readyz",service="sandbox",status="503"} 1.0' in metrics
        assert "process_cpu_seconds_total" in metrics


async def test_the_public_api_may_serve_its_docs() -> None:
    app = ServiceScaffold("orchestrator", Settings()).create_app(_no_lifespan, title="COO", docs=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://coo") as client:
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "COO"
