"""Group commit for rows that only need inserting: rows that arrive together share one multi-row
INSERT and one commit, and each caller returns once its row is committed.

``await GroupInsert(engine, table).insert(row)``: while one batch commits, the next gathers, so
under load batches grow by themselves and when idle a row is written at once. A failed batch
fails every caller in it with the error (nothing is retried: a commit that failed may have
taken effect)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass
class GroupInsert:
    engine: AsyncEngine
    table: Table
    max_batch: int = 256
    _queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = field(default_factory=list, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    async def insert(self, row: dict[str, Any]) -> None:
        """Insert ``row``; return once it is committed (or raise what failed its batch)."""
        if self._closed:
            raise RuntimeError(f"writing to {self.table.name} after shutdown")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"group-insert-{self.table.name}")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        self._idle.clear()
        self._wake.set()
        await done

    async def close(self, *, timeout_s: float = 5.0) -> None:
        """Write what is queued (within ``timeout_s``), then stop."""
        self._closed = True
        if self._task is not None:
            if self._queue and not self._task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, done in self._queue:
            if not done.done():
                done.set_exception(RuntimeError(f"{self.table.name} writer stopped"))
        self._queue.clear()

    async def _run(self) -> None:
        statement = insert(self.table)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    async with self.engine.begin() as connection:
                        await connection.execute(statement, [row for row, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
            self._idle.set()
