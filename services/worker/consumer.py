"""The worker's face on the bus: pulls work items from its durable consumer, runs each with the
``AgentRunner`` and publishes the outcome; a paused mission's item waits in the queue, a dropped
one is acked; on shutdown, running attempts get ``COO_WORKER_DRAIN_S`` and the rest is handed back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from services.common.bus import Bus, ConsumerLoop, DeadLetterSink, Deferred, Undeliverable
from services.common.contracts import StepStarted, WorkItem
from services.common.logging import get_logger
from services.common.settings import Settings
from services.worker.gate import Verdict
from services.worker.metrics import WorkerMetrics
from services.worker.runner import AgentRunner

log = get_logger(__name__)

# An attempt still running after this long is announced (StepStarted: the step shows as running);
# a quicker one is reported by its result alone, which saves a JetStream message and an engine
# transaction per step. Under load a 0.1 s threshold fired for nearly every attempt; one second is
# still quick next to the model calls that make attempts long.
STARTED_AFTER_S = 1.0


class WorkItemHandler:
    """Handles one work-item message: decode, run the attempt, publish its result (or defer/drop it)."""

    def __init__(
        self, settings: Settings, bus: Bus, runner: AgentRunner, *, metrics: WorkerMetrics, worker_id: str
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.runner = runner
        self.metrics = metrics
        self.worker_id = worker_id
        self.busy = 0
        metrics.slots_in_use(self.busy, settings.worker_concurrency)

    async def __call__(self, msg: Msg) -> None:
        self.busy += 1
        self.metrics.slots_in_use(self.busy, self.settings.worker_concurrency)
        try:
            await self._decode_and_run(msg)
        finally:
            self.busy -= 1
            self.metrics.slots_in_use(self.busy, self.settings.worker_concurrency)

    async def _decode_and_run(self, msg: Msg) -> None:
        try:
            item = WorkItem.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Undeliverable(f"cannot decode work item: {exc.errors()[0]['msg']}") from exc
        with structlog.contextvars.bound_contextvars(
            mission_id=str(item.mission_id), step=item.step_key, step_id=str(item.step_id), attempt=item.attempt
        ):
            await self._run_item(msg, item)

    async def _run_item(self, msg: Msg, item: WorkItem) -> None:
        announcement: asyncio.Task[None] | None = None

        async def announce_start() -> None:
            nonlocal announcement
            announcement = asyncio.create_task(self._announce_later(item, datetime.now(UTC)))

        try:
            outcome = await self.runner.run(item, on_start=announce_start)
        finally:
            if announcement is not None and not announcement.done():
                announcement.cancel()  # the result says it all (it carries worker and start)
        if isinstance(outcome, Verdict):
            if outcome.action == "wait":
                self.metrics.work_deferred.inc()
                await self._defer(msg, item, outcome.reason)
            else:
                log.info("work_item_dropped", reason=outcome.reason)
            return
        await self.bus.publish(self.bus.subjects.results, outcome.to_bytes(), msg_id=outcome.msg_id)

    async def _announce_later(self, item: WorkItem, started_at: datetime) -> None:
        await asyncio.sleep(STARTED_AFTER_S)
        started = StepStarted(
            mission_id=item.mission_id,
            step_id=item.step_id,
            attempt=item.attempt,
            worker=self.worker_id,
            started_at=started_at,
        )
        try:
            await self.bus.publish(self.bus.subjects.results, started.to_bytes(), msg_id=f"{item.msg_id}:started")
        except Exception:  # the result still says who ran it and when it started
            log.exception("step_started_publish_failed", step_id=str(item.step_id), attempt=item.attempt)

    async def _defer(self, msg: Msg, item: WorkItem, reason: str) -> None:
        """Leave the item in the queue for a while. Each nak counts as a delivery, so before
        the count nears its limit the item is published afresh (and this copy acked)."""
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        if deliveries < self.settings.max_deliver - 1:
            raise Deferred(reason, self.settings.pause_recheck_s)
        headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
        await asyncio.sleep(self.settings.pause_recheck_s)
        await self.bus.publish(
            msg.subject, msg.data, msg_id=f"{item.msg_id}:wait:{uuid.uuid4().hex[:12]}", headers=headers
        )


class WorkConsumer:
    """The durable consumer of this worker's agents (``COO_WORKER_AGENTS``) feeding a ``WorkItemHandler``."""

    def __init__(self, settings: Settings, bus: Bus, handler: WorkItemHandler, *, dead_letter: DeadLetterSink) -> None:
        self.settings = settings
        self.handler = handler
        self.agents = settings.worker_agents.strip()
        every = self.agents == ">"
        self.loop = ConsumerLoop(
            bus=bus,
            stream=bus.subjects.work_stream,
            durable="worker-all" if every else f"worker-{self.agents}",
            filter_subject=bus.subjects.work_all if every else bus.subjects.work(self.agents),
            handler=handler,
            dead_letter=dead_letter,
            concurrency=settings.worker_concurrency,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            name="work",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create (or check) the durable consumer, then pull in the background."""
        await self.loop.open()
        self._task = asyncio.create_task(self.loop.run(), name="work-consumer")

    async def stop(self) -> None:
        """Stop pulling, let running attempts finish within COO_WORKER_DRAIN_S, hand back the rest."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        log.info("worker_draining", running=self.handler.busy, drain_s=self.settings.worker_drain_s)
        handed_back = await self.loop.drain(self.settings.worker_drain_s)
        log.info("worker_drained", handed_back=handed_back)
