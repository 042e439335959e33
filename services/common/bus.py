"""NATS JetStream: COO's streams, consumers, publishing and the pull-consumer loop (DESIGN §5)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.telemetry import SpanKind, extract_context, inject_headers, tracer

log = get_logger(__name__)

WORK_STREAM = "COO_WORK"
EVENTS_STREAM = "COO_EVENTS"

SUBJECT_WORK = "coo.work"  # coo.work.<agent>
SUBJECT_RESULTS = "coo.results"
SUBJECT_CONTROL = "coo.control"  # coo.control.<mission>
SUBJECT_TIMELINE = "coo.timeline"  # coo.timeline.<mission>
SUBJECT_SANDBOX_EXEC = "coo.sandbox.exec"
SANDBOX_QUEUE_GROUP = "sandbox"
SUBJECT_SANDBOX_CANCEL = "coo.sandbox.cancel"

DUPLICATE_WINDOW_S = 120.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0


_ID_TOKEN = re.compile(r"(?<=\.)[0-9a-fA-F]{8}(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}(?=\.|$)")


def span_subject(subject: str) -> str:
    """A subject as a span names it: ids replaced by ``*`` so that span names stay few."""
    return _ID_TOKEN.sub("*", subject)


@contextlib.contextmanager
def send_span(subject: str, headers: dict[str, str] | None, operation: str = "send") -> Iterator[dict[str, str]]:
    """A producer span ``send <subject>`` (child of the context in ``headers`` if they carry one,
    else of the current span); yields ``headers`` carrying the span's own W3C context."""
    parent = extract_context(headers) if headers and "traceparent" in headers else None
    with tracer().start_as_current_span(
        f"{operation} {span_subject(subject)}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": operation,
            "messaging.destination.name": subject,
        },
    ):
        yield inject_headers({k: v for k, v in (headers or {}).items() if k not in ("traceparent", "tracestate")})


@contextlib.contextmanager
def process_span(msg: Msg, consumer: str | None = None) -> Iterator[None]:
    """A consumer span ``process <subject>`` in the trace the message's headers carry."""
    attributes: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": msg.subject,
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    with tracer().start_as_current_span(
        f"process {span_subject(msg.subject)}",
        context=extract_context(msg.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ):
        yield


class Undeliverable(Exception):
    """The message can never be handled (cannot be decoded, or refers to nothing): dead-letter it."""


class Deferred(Exception):
    """Not now (e.g. its mission is paused): leave the message in the stream, redeliver it after ``delay_s``."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


DeadLetterSink = Callable[[Msg, str, int], Awaitable[None]]
MessageHandler = Callable[[Msg], Awaitable[None]]


@dataclass(frozen=True)
class Subjects:
    """Every subject and stream name, with the installation's prefix applied."""

    settings: Settings

    def work(self, agent: str) -> str:
        return self.settings.subject(f"{SUBJECT_WORK}.{agent}")

    @property
    def work_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_WORK}.>")

    @property
    def results(self) -> str:
        return self.settings.subject(SUBJECT_RESULTS)

    def control(self, mission_id: object) -> str:
        return self.settings.subject(f"{SUBJECT_CONTROL}.{mission_id}")

    @property
    def control_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_CONTROL}.*")

    def timeline(self, mission_id: object) -> str:
        return self.settings.subject(f"{SUBJECT_TIMELINE}.{mission_id}")

    @property
    def timeline_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_TIMELINE}.*")

    @property
    def sandbox_exec(self) -> str:
        return self.settings.subject(SUBJECT_SANDBOX_EXEC)

    @property
    def sandbox_cancel(self) -> str:
        return self.settings.subject(SUBJECT_SANDBOX_CANCEL)

    @property
    def work_stream(self) -> str:
        return self.settings.stream(WORK_STREAM)

    @property
    def events_stream(self) -> str:
        return self.settings.stream(EVENTS_STREAM)


class Bus:
    """One NATS connection with JetStream, owned by a service's lifespan."""

    def __init__(self, settings: Settings, *, client_name: str) -> None:
        self.settings = settings
        self.subjects = Subjects(settings)
        self.client_name = client_name
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus is not connected")
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self, *, deadline_s: float = 30.0) -> None:
        """Connect, retrying until ``deadline_s``; once connected, reconnect forever."""
        _, url = self.settings.require_infra()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + deadline_s
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(max(0.1, give_up_at - loop.time())):
                    self._nc = await self._connect(url)
                break
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                if loop.time() >= give_up_at:
                    reason = str(exc) or type(exc).__name__
                    raise RuntimeError(f"cannot reach NATS at {url} (COO_NATS_URL): {reason}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._js = self._nc.jetstream(timeout=5)

    async def _connect(self, url: str) -> NatsClient:
        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", error=str(exc) or type(exc).__name__)

        async def on_disconnected() -> None:
            log.warning("nats.disconnected")

        async def on_reconnected() -> None:
            log.info("nats.reconnected")

        return await nats.connect(
            servers=[url],
            name=self.client_name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            # Consumers are stopped by their owners first; flush what was published, then close.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._nc.close()
        self._nc = None
        self._js = None

    async def ping(self, *, timeout_s: float = 2.0) -> None:
        """Raise unless the server answers a round trip within the deadline."""
        if not self.is_connected:
            raise ConnectionError("not connected to NATS")
        await self.nc.flush(timeout=max(1, round(timeout_s)))

    # --- streams ---------------------------------------------------------------------------
    async def ensure_streams(self) -> None:
        """Create or update COO's streams so that every service can start in any order."""
        s = self.subjects
        configs = [
            StreamConfig(
                name=s.work_stream,
                subjects=[s.work_all],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                description="COO work items: one message per step attempt",
            ),
            StreamConfig(
                name=s.events_stream,
                subjects=[s.results, s.control_all, s.timeline_all],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                max_age=EVENTS_MAX_AGE_S,
                description="COO results, control commands and timeline fan-out",
            ),
        ]
        for config in configs:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)

    # --- publishing ------------------------------------------------------------------------
    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish to JetStream and wait for the stream's ack (dedupe by ``Nats-Msg-Id``), in a
        ``send <subject>`` span whose W3C context travels in the headers."""
        with send_span(subject, headers) as hdrs:
            if msg_id is not None:
                hdrs["Nats-Msg-Id"] = msg_id
            await self.js.publish(subject, payload, headers=hdrs)

    async def publish_core(self, subject: str, payload: bytes) -> None:
        """Fire-and-forget core NATS publish (timeline fan-out), carrying the current W3C context."""
        await self.nc.publish(subject, payload, headers=inject_headers() or None)

    async def request(
        self, subject: str, payload: bytes, *, timeout_s: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """Core NATS request/reply in a ``send <subject>`` span; its context travels in the headers."""
        with send_span(subject, headers) as hdrs:
            return await self.nc.request(subject, payload, timeout=timeout_s, headers=hdrs)

    async def ensure_consumer(
        self,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        ack_wait_s: float,
        max_deliver: int,
        max_ack_pending: int,
    ) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        )
        try:
            await self.js.add_consumer(stream, config=config)
        except nats.js.errors.BadRequestError as exc:
            hint = (
                "another consumer of this work-queue stream takes overlapping subjects: run every worker "
                "with the same COO_WORKER_AGENTS (or give each agent its own worker and none with '>')"
                if exc.err_code == 10100
                else "it exists with a configuration that cannot be changed in place; delete it to recreate it"
            )
            raise RuntimeError(
                f"cannot create consumer '{durable}' on stream '{stream}': {exc.description}; {hint}"
            ) from exc
        return await self.js.pull_subscribe_bind(durable=durable, stream=stream)


@dataclass
class ConsumerLoop:
    """Fetch from a durable pull consumer and run ``handler`` per message, bounded in concurrency.

    A message is acked only after ``handler`` returned, that is after its work was committed.
    ``Undeliverable`` messages go to ``dead_letter``; a message that failed ``max_deliver`` times,
    or comes back after crashing its handler that often, goes to ``give_up`` (by default
    ``dead_letter``). Either is terminated only once that sink committed; until then, and after
    any other failure, the message is nak'ed with a growing delay. JetStream itself never stops
    redelivering (its own limit is off), so no message disappears unrecorded.
    """

    bus: Bus
    stream: str
    durable: str
    filter_subject: str
    handler: MessageHandler
    dead_letter: DeadLetterSink
    concurrency: int = 8
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    fetch_timeout_s: float = 1.0
    name: str = "consumer"
    give_up: DeadLetterSink | None = None

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: JetStreamContext.PullSubscription | None = None
        # Deliveries that were deferrals, by stream sequence: they do not count towards giving up.
        # (Kept per process: with several replicas a message deferred on each is given more room, never less.)
        self._deferrals: dict[int, int] = {}

    async def open(self) -> None:
        """Create (or check) the durable consumer; a start-up error names what is wrong."""
        self._sub = await self.bus.ensure_consumer(
            stream=self.stream,
            durable=self.durable,
            filter_subject=self.filter_subject,
            ack_wait_s=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=max(self.concurrency * 4, 64),
        )

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._sub is None:
                    await self.open()
                sub = self._sub
                assert sub is not None
                await self._slots.acquire()
                free = 1
                while free < self.concurrency and not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                try:
                    msgs = await sub.fetch(batch=free, timeout=self.fetch_timeout_s)
                except BaseException:
                    for _ in range(free):
                        self._slots.release()
                    raise
                for _ in range(free - len(msgs)):
                    self._slots.release()
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg), name=f"{self.name}:{msg.subject}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                backoff = 0.2
            except TimeoutError:  # nothing to fetch (nats-py raises its own and asyncio's)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer.fetch_failed", consumer=self.name, error=str(exc) or type(exc).__name__)
                if isinstance(exc, nats.js.errors.NotFoundError):
                    self._sub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def drain(self, timeout_s: float = 10.0) -> int:
        """Shut down gracefully (call it once :meth:`run` is cancelled, so nothing more is pulled):
        wait up to ``timeout_s`` for the messages in hand, then hand back those still running
        (nak without delay: another consumer gets them at once instead of after the ack wait).
        Returns how many were handed back."""
        if self._sub is not None:
            # Withdraw the inbox first: a pull request still open on the server would otherwise take
            # the handed-back messages straight back to this closing consumer.
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway: its inbox goes with it
                log.warning("consumer.unsubscribe_failed", consumer=self.name, error=str(exc))
            self._sub = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
        unfinished = [task for task in self._tasks if not task.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.warning("consumer.handed_back", consumer=self.name, count=len(unfinished), waited_s=timeout_s)
            await asyncio.wait(unfinished, timeout=5.0)
        return len(unfinished)

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _handle(self, msg: Msg) -> None:
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        deliveries = (msg.metadata.num_delivered if msg.metadata else 1) - self._deferrals.get(seq, 0)
        give_up = self.give_up or self.dead_letter
        try:
            if deliveries > self.max_deliver:  # its handler kept dying (crash, ack timeout): stop trying
                await give_up(msg, f"gave up after {deliveries - 1} deliveries without an outcome", deliveries)
                await msg.term()
                return
            try:
                with process_span(msg, self.durable):
                    await self.handler(msg)
            except Deferred as exc:
                if len(self._deferrals) > 100_000:
                    self._deferrals.clear()
                self._deferrals[seq] = self._deferrals.get(seq, 0) + 1
                await msg.nak(delay=exc.delay_s)
                return
            except Undeliverable as exc:
                await self.dead_letter(msg, str(exc), deliveries)
                await msg.term()
                return
            except asyncio.CancelledError:
                # Shutting down with the message in hand: redeliver it now, to whoever is left (if the
                # nak is lost, JetStream redelivers it after the ack wait all the same).
                try:
                    await asyncio.wait_for(msg.nak(), timeout=2.0)
                except Exception as exc:
                    log.warning("consumer.hand_back_failed", consumer=self.name, subject=msg.subject, error=str(exc))
                raise
            except Exception as exc:
                log.exception("consumer.handler_failed", consumer=self.name, subject=msg.subject, deliveries=deliveries)
                if deliveries >= self.max_deliver:
                    await give_up(msg, f"{type(exc).__name__}: {exc}", deliveries)
                    await msg.term()
                else:
                    await msg.nak(delay=self._backoff(deliveries))
                return
            self._deferrals.pop(seq, None)
            await msg.ack()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("consumer.settle_failed", consumer=self.name, subject=msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._backoff(deliveries))
        finally:
            heartbeat.cancel()
            self._slots.release()

    @staticmethod
    def _backoff(deliveries: int) -> float:
        return float(min(30.0, 0.5 * 2 ** (deliveries - 1)) * random.uniform(0.5, 1.0))
