"""What the three FastAPI apps share: the error body, health and readiness routes, /metrics."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.db.session import ping
from services.common.logging import get_logger
from services.common.resources import ServiceResources
from services.common.telemetry import exemplar

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


class ApiError(Exception):
    """An error answered with COO's error body ``{"error": {"type", "message", "field"?}}``."""

    def __init__(
        self,
        status_code: int,
        error_type: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.field = field
        self.headers = headers


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str = Field(description="What kind of refusal: validation, not_found, conflict, unauthorized, ...")
    message: str = Field(description="Why, for a person")
    field: str | None = Field(default=None, description="The input at fault, when one is (absent otherwise)")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of COO's APIs (some add fields: a refused webhook its delivery)."""

    model_config = ConfigDict(frozen=True)

    error: ErrorDetail


class Readiness(BaseModel):
    status: str = Field(description="ready, or unavailable")
    checks: dict[str, str] = Field(description='Each dependency: "ok" or "down: <why>"')
    error: ErrorDetail | None = Field(default=None, description="When unavailable: which dependency and why")


_ERROR_DESCRIPTIONS = {
    400: "The body could not be parsed",
    401: "No API key, or one that is unknown, revoked or expired",
    403: "The key's scope does not allow this",
    404: "Not found",
    409: "Not legal in the current state",
    413: "The body is too large",
    415: "Unsupported content type",
    422: "Invalid input; `field` names it",
    429: "Over the key's rate limit; Retry-After says when to try again",
    503: "Unavailable",
}


def error_responses(*codes: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes``, each answered with ``ErrorBody`` (``described`` words them)."""
    words = {**_ERROR_DESCRIPTIONS, **(described or {})}
    return {code: {"model": ErrorBody, "description": words[code]} for code in codes}


def error_body(error_type: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error_type, "message": message}
    if field is not None:
        body["field"] = field
    return {"error": body}


_STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    429: "rate_limited",
    503: "unavailable",
}


def _field_from_loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return (where + "." + ".".join(rest)) if where != "body" else ".".join(rest) or "body"
    return ".".join(parts)


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.lru_cache(maxsize=256)
def _path_pattern(template: str) -> re.Pattern[str]:
    """``/v1/missions/{mission_id}`` as a pattern of the paths it names."""
    return re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)))


def allowed_methods(app: FastAPI, path: str) -> str:
    """The ``Allow`` header for ``path``: the methods its OpenAPI document gives it (routes of one path
    may live in several routers)."""
    methods = {
        method.upper()
        for template, operations in app.openapi().get("paths", {}).items()
        if _path_pattern(template).fullmatch(path)
        for method in operations
        if method in _METHODS
    }
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.error_type, exc.message, exc.field),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field_name = _field_from_loc(first.get("loc", ()))
        return JSONResponse(
            error_body("validation", f"{field_name}: {first.get('msg', 'invalid')}", field_name),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every method of the path, not those of the first route that matched
            headers = {**(headers or {}), "Allow": allowed_methods(app, request.url.path)}
        return JSONResponse(
            error_body(_STATUS_TYPES.get(exc.status_code, "error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return JSONResponse(error_body("internal", "internal error; see the service log"), status_code=500)


@dataclass
class HttpMetrics:
    registry: CollectorRegistry
    requests: Counter = field(init=False)
    duration: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "coo_http_requests_total",
            "HTTP requests served",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "coo_http_request_duration_seconds",
            "HTTP request duration",
            ["service", "method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def install_http_metrics(app: FastAPI, metrics: HttpMetrics, service: str) -> None:
    # Readiness answers at 0 from the start: the first 503 is an increase that rate() sees.
    for status in ("200", "503"):
        metrics.requests.labels(service=service, method="GET", route="/readyz", status=status)
    app.add_middleware(_HttpMetricsMiddleware, metrics=metrics, service=service)


class _HttpMetricsMiddleware:
    """Requests and their duration to the response's headers (so a stream counts when it starts),
    by route template. A plain ASGI middleware: no task or memory stream per request."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, service: str) -> None:
        self.app = app
        self.metrics = metrics
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            observed = True
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            sample = exemplar()
            method = scope["method"]
            self.metrics.requests.labels(self.service, method, path, str(status)).inc(exemplar=sample)
            self.metrics.duration.labels(self.service, method, path).observe(
                time.perf_counter() - start, exemplar=sample
            )

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not observed:
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            if not observed:
                observe(500)


def infra_checks(resources: ServiceResources) -> dict[str, ReadinessCheck]:
    """Readiness checks of Postgres and NATS, for resources the lifespan puts in ``resources``
    (``engine``, ``bus``); until it has, the check fails, so a service is never ready too early."""

    async def postgres() -> None:
        engine = resources.engine
        if engine is None:
            raise RuntimeError("Postgres is not open yet")
        await ping(engine)

    async def nats() -> None:
        bus = resources.bus
        if bus is None:
            raise RuntimeError("NATS is not connected yet")
        await bus.ping()

    return {"postgres": postgres, "nats": nats}


def install_health_routes(app: FastAPI, *, checks: dict[str, ReadinessCheck], registry: CollectorRegistry) -> None:
    """``/healthz`` (process up), ``/readyz`` (every dependency answers, else 503 naming it), ``/metrics``."""

    @app.get("/healthz", tags=["health"], summary="The process is up", operation_id="get_health")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Postgres and NATS are reachable",
        operation_id="get_readiness",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency does not answer; `error` names it"}},
    )
    async def readyz() -> JSONResponse:
        async def run(name: str, check: ReadinessCheck) -> tuple[str, str | None]:
            try:
                async with asyncio.timeout(3.0):
                    await check()
            except Exception as exc:
                return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return name, None

        results = await asyncio.gather(*(run(name, check) for name, check in checks.items()))
        down = {name: error for name, error in results if error is not None}
        body: dict[str, Any] = {
            "status": "ready" if not down else "unavailable",
            "checks": {name: ("ok" if error is None else f"down: {error}") for name, error in results},
        }
        if down:
            said = "; ".join(f"{name}: {error}" for name, error in sorted(down.items()))
            body["error"] = error_body("unavailable", f"not ready: {said}")["error"]
        return JSONResponse(body, status_code=200 if not down else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)
