"""Group commit: changes that arrive together share one transaction.

Requests and result messages each need a short transaction on the mission they touch. Run one at a
time, most of their cost is the transaction itself (begin, commit, admission, publishing), not the
change. ``UnitBatcher.run(work)`` queues ``work``; a single runner applies every queued piece of
work, in order, in one unit of work and commits once. While one batch commits the next one gathers,
so under load batches grow by themselves and when idle a piece of work runs at once.

A failing piece of work must not take the others down: if the batch fails, each of its pieces is run
again alone, in its own unit of work, and only the one that fails gets the exception. Every piece
runs in the context it was queued from (its span, trace and log fields)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from services.common.logging import get_logger
from services.orchestrator.engine.unit import UnitOfWork

log = get_logger(__name__)

T = TypeVar("T")
Work = Callable[[UnitOfWork], Coroutine[Any, Any, T]]


@dataclass
class _Pending(Generic[T]):
    work: Work[T]
    context: contextvars.Context
    done: asyncio.Future[T]


@dataclass
class UnitBatcher:
    """Applies queued work in shared units of work (see the module's docstring)."""

    unit: Callable[[], UnitOfWork]
    max_batch: int = 64
    name: str = "batch"
    _queue: list[_Pending[Any]] = field(default_factory=list, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    async def run(self, work: Work[T]) -> T:
        """Queue ``work`` and wait until its batch committed (and published); its result or exception."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._runner(), name=f"{self.name}-runner")
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, contextvars.copy_context(), done))
        self._wake.set()
        return await done

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.done.done():
                pending.done.set_exception(RuntimeError(f"{self.name} is shutting down"))
        self._queue.clear()

    async def _runner(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                batch = [p for p in batch if not p.done.done()]  # callers that gave up (cancelled)
                if batch:
                    await self._apply(batch)

    async def _apply(self, batch: list[_Pending[Any]]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        results: list[Any] = []
        try:
            async with self.unit() as uow:
                for pending in batch:
                    results.append(await asyncio.create_task(pending.work(uow), context=pending.context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch_failed_retrying_alone", batch=self.name, size=len(batch), error=type(exc).__name__)
            for pending in batch:
                await self._alone(pending)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    async def _alone(self, pending: _Pending[Any]) -> None:
        async def one() -> Any:
            async with self.unit() as uow:
                return await pending.work(uow)

        try:
            result = await asyncio.create_task(one(), context=pending.context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not pending.done.done():
                pending.done.set_exception(exc)
            return
        if not pending.done.done():
            pending.done.set_result(result)
