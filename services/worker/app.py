"""The agent worker: pulls work items, runs agents, persists results, publishes outcomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.common.bus import ConsumerLoop, Undeliverable
from services.common.contracts import StepStarted, WorkItem
from services.common.deadletters import dead_letter_sink
from services.common.http import (
    HttpMetrics,
    infra_checks,
    install_error_handlers,
    install_health_routes,
    install_http_metrics,
)
from services.common.infra import open_infra
from services.common.logging import get_logger
from services.common.settings import Settings, instance_id
from services.worker.agents import builtin  # noqa: F401  (registers the offline scripts)
from services.worker.llm.base import ModelProvider
from services.worker.llm.offline import OfflineProvider
from services.worker.runner import AgentRunner
from services.worker.sandbox_client import SandboxClient

log = get_logger(__name__)


def select_provider(settings: Settings) -> ModelProvider:
    if settings.anthropic_api_key is not None:
        log.warning(
            "anthropic_provider_unavailable",
            detail="ANTHROPIC_API_KEY is set but this build runs agents on the offline model only",
        )
    else:
        log.info(
            "model_provider",
            provider="offline",
            detail="ANTHROPIC_API_KEY unset: agents run on the offline model",
        )
    return OfflineProvider()


def create_app(settings: Settings) -> FastAPI:
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    holder: dict[str, object] = {}
    worker_id = instance_id()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Each running attempt holds one connection (its claim) and briefly needs another.
            infra = await open_infra(
                stack,
                settings,
                client_name=f"coo-worker:{worker_id}",
                resources=holder,
                pool_size=max(settings.db_pool_size, settings.worker_concurrency + 2),
            )
            sessionmaker, bus = infra.sessionmaker, infra.bus
            runner = AgentRunner(settings, sessionmaker, SandboxClient(bus), select_provider(settings), worker_id)

            async def handle_work(msg: Msg) -> None:
                try:
                    item = WorkItem.model_validate_json(msg.data)
                except ValidationError as exc:
                    raise Undeliverable(f"cannot decode work item: {exc.errors()[0]['msg']}") from exc
                started = StepStarted(
                    mission_id=item.mission_id,
                    step_id=item.step_id,
                    attempt=item.attempt,
                    worker=worker_id,
                    started_at=datetime.now(UTC),
                )
                await bus.publish(bus.subjects.results, started.to_bytes(), msg_id=f"{item.msg_id}:started")
                result = await runner.run(item)
                await bus.publish(bus.subjects.results, result.to_bytes(), msg_id=result.msg_id)

            agents = settings.worker_agents.strip()
            filter_subject = bus.subjects.work_all if agents == ">" else bus.subjects.work(agents)
            durable = "worker-all" if agents == ">" else f"worker-{agents}"
            loop = ConsumerLoop(
                bus=bus,
                stream=bus.subjects.work_stream,
                durable=durable,
                filter_subject=filter_subject,
                handler=handle_work,
                dead_letter=dead_letter_sink(sessionmaker),
                concurrency=settings.worker_concurrency,
                ack_wait_s=settings.ack_wait_s,
                max_deliver=settings.max_deliver,
                name="work",
            )
            await loop.open()
            task = asyncio.create_task(loop.run(), name="work-consumer")

            async def stop() -> None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await loop.drain()

            stack.push_async_callback(stop)
            log.info("worker_started", worker=worker_id, agents=agents, concurrency=settings.worker_concurrency)
            yield

    app = FastAPI(title="COO agent worker", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_http_metrics(app, http_metrics, "worker")

    install_health_routes(app, checks=infra_checks(holder), registry=registry)
    return app
