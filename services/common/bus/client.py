"""One NATS connection with JetStream: connecting, COO's streams, publishing, durable consumers."""

from __future__ import annotations

import asyncio

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

from services.common.bus.subjects import DUPLICATE_WINDOW_S, EVENTS_MAX_AGE_S, Subjects
from services.common.bus.tracing import send_span
from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.telemetry import inject_headers

log = get_logger(__name__)


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
            try:
                await self._nc.flush(timeout=2)
            except Exception as exc:  # closing all the same; what was not flushed is said here
                log.warning("nats.flush_failed", client=self.client_name, error=str(exc) or type(exc).__name__)
            try:
                async with asyncio.timeout(5):
                    await self._nc.close()
            except Exception as exc:
                log.warning("nats.close_failed", client=self.client_name, error=str(exc) or type(exc).__name__)
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
                # Timeline fan-out (coo.timeline.<mission>) is core NATS only: nothing reads it back
                # from a stream (SSE subscribes, and resumes from the table).
                subjects=[s.results, s.control_all],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                max_age=EVENTS_MAX_AGE_S,
                description="COO results and control commands",
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
