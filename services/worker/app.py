"""The agent worker: pulls work items, runs agents, persists results, publishes outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.app import ServiceScaffold
from services.common.db.models import Agent
from services.common.deadletters import dead_letter_sink
from services.common.logging import get_logger
from services.common.settings import Settings, instance_id
from services.common.slack import SlackClient
from services.worker.agents import builtin, github_pr, mcp_clerk  # noqa: F401  (register the offline scripts, github-pr)
from services.worker.consumer import WorkConsumer, WorkItemHandler
from services.worker.llm.pricing import PriceTable
from services.worker.llm.providers import model_warnings, select_provider
from services.worker.metrics import WorkerMetrics
from services.worker.runner import AgentRunner
from services.worker.sandbox_client import SandboxClient

log = get_logger(__name__)


def create_app(settings: Settings) -> FastAPI:
    scaffold = ServiceScaffold("worker", settings)
    metrics = WorkerMetrics(scaffold.registry)
    prices = PriceTable(settings.model_prices)
    worker_id = instance_id()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Each running attempt holds one connection (its claim) and briefly needs another.
            infra = await scaffold.open(
                stack,
                client_name=f"coo-worker:{worker_id}",
                pool_size=max(settings.db_pool_size, settings.worker_concurrency + 2),
            )
            provider = select_provider(settings)
            if provider.name == "anthropic":
                stack.push_async_callback(provider.close)
                await _warn_about_models(infra.sessionmaker, prices)
            slack = None
            if settings.slack_webhook_url is not None:
                slack = SlackClient(settings.slack_webhook_url)
                stack.push_async_callback(slack.aclose)
            runner = AgentRunner(
                settings,
                infra.sessionmaker,
                SandboxClient(infra.bus),
                provider,
                worker_id,
                metrics=metrics,
                prices=prices,
                slack=slack,
            )
            handler = WorkItemHandler(settings, infra.bus, runner, metrics=metrics, worker_id=worker_id)
            consumer = WorkConsumer(settings, infra.bus, handler, dead_letter=dead_letter_sink(infra.sessionmaker))
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            log.info(
                "worker_started", worker=worker_id, agents=consumer.agents, concurrency=settings.worker_concurrency
            )
            yield

    return scaffold.create_app(lifespan, title="COO agent worker")


async def _warn_about_models(sessionmaker: async_sessionmaker[AsyncSession], prices: PriceTable) -> None:
    """Say at start-up which enabled agents name a model the price table does not know."""
    async with sessionmaker() as session:
        models = (await session.execute(select(Agent.model).where(Agent.enabled))).scalars().all()
    for warning in model_warnings(models, prices):
        log.warning("model_configuration", detail=warning)
