"""The pull-consumer loop: fetch from a durable JetStream consumer, run a handler per message, and
settle each one (ack, deferral, dead letter) only once its outcome is committed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common.bus.client import Bus
from services.common.bus.tracing import process_span
from services.common.logging import get_logger

log = get_logger(__name__)


class Undeliverable(Exception):
    """The message can never be handled (cannot be decoded, or refers to nothing): dead-letter it."""


class Deferred(Exception):
    """Not now (e.g. its mission is paused): leave the message in the stream, redeliver it after ``delay_s``."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


DeadLetterSink = Callable[[Msg, str, int], Awaitable[None]]
MessageHandler = Callable[[Msg], Awaitable[None]]


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
            try:
                await msg.in_progress()
            except Exception as exc:  # the ack wait may run out: then JetStream redelivers the message
                log.warning("consumer.keep_alive_failed", consumer=self.name, subject=msg.subject, error=str(exc))

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
            try:
                await msg.nak(delay=self._backoff(deliveries))
            except Exception as exc:  # unsettled: JetStream redelivers it after the ack wait
                log.warning("consumer.nak_failed", consumer=self.name, subject=msg.subject, error=str(exc))
        finally:
            heartbeat.cancel()
            self._slots.release()

    @staticmethod
    def _backoff(deliveries: int) -> float:
        return float(min(30.0, 0.5 * 2 ** (deliveries - 1)) * random.uniform(0.5, 1.0))
