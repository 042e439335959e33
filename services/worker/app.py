"""The agent worker: pulls work items, runs agents, persists results, publishes outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy import select

from services.common.bus import ConsumerLoop, Deferred, Undeliverable
from services.common.contracts import StepStarted, WorkItem
from services.common.db.models import Agent
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
from services.common.runtime_metrics import register_pool_metrics, service_registry
from services.common.settings import Settings, instance_id
from services.common.slack import SlackClient
from services.common.telemetry import Telemetry, instrument_app, instrument_engine
from services.worker.agents import builtin  # noqa: F401  (registers the offline scripts)
from services.worker.gate import Verdict
from services.worker.llm.pricing import PriceTable
from services.worker.llm.providers import model_warnings, select_provider
from services.worker.metrics import WorkerMetrics
from services.worker.runner import AgentRunner
from services.worker.sandbox_client import SandboxClient

log = get_logger(__name__)

# An attempt still running after this long is announced (StepStarted: the step shows as running);
# a quicker one is reported by its result alone, which saves the engine a transaction per step.
STARTED_AFTER_S = 0.1


def create_app(settings: Settings) -> FastAPI:
    registry = service_registry()
    metrics = WorkerMetrics(registry)
    prices = PriceTable(settings.model_prices)
    http_metrics = HttpMetrics(registry)
    holder: dict[str, object] = {}
    register_pool_metrics(registry, holder)
    worker_id = instance_id()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Telemetry("worker", registry))
            # Each running attempt holds one connection (its claim) and briefly needs another.
            infra = await open_infra(
                stack,
                settings,
                client_name=f"coo-worker:{worker_id}",
                resources=holder,
                pool_size=max(settings.db_pool_size, settings.worker_concurrency + 2),
            )
            sessionmaker, bus = infra.sessionmaker, infra.bus
            instrument_engine(infra.engine)
            provider = select_provider(settings)
            if provider.name == "anthropic":
                stack.push_async_callback(provider.close)
                async with sessionmaker() as session:
                    models = (await session.execute(select(Agent.model).where(Agent.enabled))).scalars().all()
                for warning in model_warnings(models, prices):
                    log.warning("model_configuration", detail=warning)
            slack = None
            if settings.slack_webhook_url is not None:
                slack = SlackClient(settings.slack_webhook_url)
                stack.push_async_callback(slack.aclose)
            runner = AgentRunner(
                settings,
                sessionmaker,
                SandboxClient(bus),
                provider,
                worker_id,
                metrics=metrics,
                prices=prices,
                slack=slack,
            )

            busy = 0
            metrics.slots_in_use(busy, settings.worker_concurrency)

            async def handle_work(msg: Msg) -> None:
                nonlocal busy
                busy += 1
                metrics.slots_in_use(busy, settings.worker_concurrency)
                try:
                    await decode_and_run(msg)
                finally:
                    busy -= 1
                    metrics.slots_in_use(busy, settings.worker_concurrency)

            async def decode_and_run(msg: Msg) -> None:
                try:
                    item = WorkItem.model_validate_json(msg.data)
                except ValidationError as exc:
                    raise Undeliverable(f"cannot decode work item: {exc.errors()[0]['msg']}") from exc
                with structlog.contextvars.bound_contextvars(
                    mission_id=str(item.mission_id), step=item.step_key, step_id=str(item.step_id), attempt=item.attempt
                ):
                    await run_item(msg, item)

            async def run_item(msg: Msg, item: WorkItem) -> None:
                announcement: asyncio.Task[None] | None = None

                async def announce_later(started_at: datetime) -> None:
                    await asyncio.sleep(STARTED_AFTER_S)
                    started = StepStarted(
                        mission_id=item.mission_id,
                        step_id=item.step_id,
                        attempt=item.attempt,
                        worker=worker_id,
                        started_at=started_at,
                    )
                    try:
                        await bus.publish(bus.subjects.results, started.to_bytes(), msg_id=f"{item.msg_id}:started")
                    except Exception:  # the result still says who ran it and when it started
                        log.exception("step_started_publish_failed", step_id=str(item.step_id), attempt=item.attempt)

                async def announce_start() -> None:
                    nonlocal announcement
                    announcement = asyncio.create_task(announce_later(datetime.now(UTC)))

                try:
                    outcome = await runner.run(item, on_start=announce_start)
                finally:
                    if announcement is not None and not announcement.done():
                        announcement.cancel()  # the result says it all (it carries worker and start)
                if isinstance(outcome, Verdict):
                    if outcome.action == "wait":
                        metrics.work_deferred.inc()
                        await defer(msg, item, outcome.reason)
                    else:
                        log.info("work_item_dropped", reason=outcome.reason)
                    return
                await bus.publish(bus.subjects.results, outcome.to_bytes(), msg_id=outcome.msg_id)

            async def defer(msg: Msg, item: WorkItem, reason: str) -> None:
                """Leave the item in the queue for a while. Each nak counts as a delivery, so before
                the count nears its limit the item is published afresh (and this copy acked)."""
                deliveries = msg.metadata.num_delivered if msg.metadata else 1
                if deliveries < settings.max_deliver - 1:
                    raise Deferred(reason, settings.pause_recheck_s)
                headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
                await asyncio.sleep(settings.pause_recheck_s)
                await bus.publish(
                    msg.subject, msg.data, msg_id=f"{item.msg_id}:wait:{uuid.uuid4().hex[:12]}", headers=headers
                )

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
                """Stop pulling, let running attempts finish within COO_WORKER_DRAIN_S, hand back the rest."""
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.info("worker_draining", running=busy, drain_s=settings.worker_drain_s)
                handed_back = await loop.drain(settings.worker_drain_s)
                log.info("worker_drained", handed_back=handed_back)

            stack.push_async_callback(stop)
            log.info("worker_started", worker=worker_id, agents=agents, concurrency=settings.worker_concurrency)
            yield

    app = FastAPI(title="COO agent worker", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_http_metrics(app, http_metrics, "worker")
    instrument_app(app)

    install_health_routes(app, checks=infra_checks(holder), registry=registry)
    return app
