"""Group commit: changes that arrive together share one transaction.

Requests and result messages each need a short transaction on the mission they touch. Run one at a
time, most of their cost is the transaction itself (begin, commit, admission, publishing), not the
change. ``UnitBatcher.run(work)`` queues ``work``; a runner applies every queued piece of work, in
order, in one unit of work and commits once. While one batch commits the next one gathers, so under
load batches grow by themselves and when idle a piece of work runs at once.

A failing piece of work must not take the others down: if the batch fails before its commit was
sent, each of its pieces is run again alone, in its own unit of work, and only the one that fails
gets the exception. If the commit itself failed, whether it took effect is unknown: every piece
gets the error rather than being applied a second time. Every piece runs in the context it was
queued from (its span, trace and log fields); the runners themselves run in an empty one."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import trace

from services.common.logging import get_logger
from services.common.telemetry import tracer
from services.orchestrator.engine.unit import UnitOfWork

log = get_logger(__name__)

T = TypeVar("T")
Work = Callable[[UnitOfWork], Coroutine[Any, Any, T]]


@dataclass
class _Pending(Generic[T]):
    work: Work[T]
    context: contextvars.Context
    done: asyncio.Future[T]
    key: str

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def succeed(self, result: T) -> None:
        if not self.done.done():
            self.done.set_result(result)


class BatcherClosed(RuntimeError):
    """Work queued after (or still pending at) shutdown."""


@dataclass
class UnitBatcher:
    """Applies queued work in shared units of work (see the module's docstring)."""

    unit: Callable[[], UnitOfWork]
    # Run first in a batch's unit of work with the batch's keys, in order (e.g. to lock every
    # mission of the batch in one statement rather than one per piece).
    prepare: Callable[[UnitOfWork, list[str]], Coroutine[Any, Any, None]] | None = None
    max_batch: int = 64
    runners: int = 2  # batches in flight at once: one commits while the next is applied
    name: str = "batch"
    _queue: list[_Pending[Any]] = field(default_factory=list, init=False)
    _wake: asyncio.Condition = field(default_factory=asyncio.Condition, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _closed: bool = field(default=False, init=False)

    async def run(self, work: Work[T], *, key: str = "") -> T:
        """Queue ``work`` and wait until its batch committed (and published); its result or exception.

        Within a batch, work runs in the order of ``key`` (the mission it locks), so that batches in
        flight at once take their row locks in the same order and never deadlock each other."""
        if self._closed:
            raise BatcherClosed(f"{self.name} is shut down")
        self._start_runners()
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, contextvars.copy_context(), done, key))
        async with self._wake:
            self._wake.notify()
        return await done

    def _start_runners(self) -> None:
        self._tasks = [task for task in self._tasks if not task.done()]
        while len(self._tasks) < self.runners:
            # An empty context: a runner must not carry the trace or log fields of whoever started it.
            task = asyncio.create_task(
                self._runner(), name=f"{self.name}-runner-{len(self._tasks)}", context=contextvars.Context()
            )
            self._tasks.append(task)

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        error = BatcherClosed(f"{self.name} is shutting down")
        for pending in self._queue:
            pending.fail(error)
        self._queue.clear()

    async def _runner(self) -> None:
        while True:
            async with self._wake:
                await self._wake.wait_for(lambda: bool(self._queue))
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if self._queue:
                    self._wake.notify()  # more than one batch waits: the other runner takes the rest
            batch = sorted((p for p in batch if not p.done.done()), key=lambda p: p.key)  # skip who gave up
            if not batch:
                continue
            try:
                await self._apply(batch)
            except BaseException as exc:
                # Nobody is left waiting on a batch that broke off, whatever broke it off.
                cancelled = isinstance(exc, asyncio.CancelledError)
                error = BatcherClosed(f"{self.name} stopped while applying this") if cancelled else exc
                for pending in batch:
                    pending.fail(error)
                task = asyncio.current_task()
                if cancelled and task is not None and task.cancelling():
                    raise  # the runner itself is being stopped
                if not isinstance(exc, Exception | asyncio.CancelledError):
                    raise
                log.exception("batch_runner_error", batch=self.name, size=len(batch))

    async def _apply(self, batch: list[_Pending[Any]]) -> None:
        """One span per unit of work (its SQL statements have none unless ``COO_TRACE_SQL``),
        linked to the span of every piece it applied: each piece keeps its own trace."""
        links = [trace.Link(span.get_span_context()) for span in _spans(batch)]
        with tracer().start_as_current_span(
            f"{self.name}.commit",
            kind=trace.SpanKind.INTERNAL,
            links=links,
            attributes={"coo.batch.size": len(batch), "db.system.name": "postgresql"},
        ):
            await self._apply_batch(batch)

    async def _apply_batch(self, batch: list[_Pending[Any]]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        results: list[Any] = []
        unit = self.unit()
        try:
            async with unit as uow:
                if self.prepare is not None:
                    await self.prepare(uow, [pending.key for pending in batch])
                for pending in batch:
                    results.append(await asyncio.create_task(pending.work(uow), context=pending.context))
        except Exception as exc:
            if unit.commit_sent:  # it may have committed: applying the pieces again could do them twice
                log.warning("batch_commit_failed", batch=self.name, size=len(batch), error=type(exc).__name__)
                for pending in batch:
                    pending.fail(exc)
                return
            log.info("batch_failed_retrying_alone", batch=self.name, size=len(batch), error=type(exc).__name__)
            for pending in batch:
                await self._alone(pending)
            return
        for pending, result in zip(batch, results, strict=True):
            pending.succeed(result)

    async def _alone(self, pending: _Pending[Any]) -> None:
        async def one() -> Any:
            async with self.unit() as uow:
                return await pending.work(uow)

        try:
            result = await asyncio.create_task(one(), context=pending.context)
        except Exception as exc:
            pending.fail(exc)
            return
        pending.succeed(result)


def _spans(batch: list[_Pending[Any]]) -> list[trace.Span]:
    """The recording span each piece was queued from."""
    spans = []
    for pending in batch:
        span = pending.context.run(trace.get_current_span)
        if span.get_span_context().is_valid:
            spans.append(span)
    return spans
