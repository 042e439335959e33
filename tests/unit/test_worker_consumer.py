"""The worker's work-item handler, without a lifespan, a bus or a database: what it publishes, defers
and refuses for each kind of message."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from services.common.bus import Deferred, Subjects, Undeliverable
from services.common.contracts import WorkItem
from services.common.settings import Settings
from services.worker.consumer import WorkItemHandler
from services.worker.gate import Verdict
from services.worker.metrics import WorkerMetrics


@dataclass
class RecordingBus:
    subjects: Subjects
    published: list[tuple[str, bytes, str | None]] = field(default_factory=list)

    async def publish(
        self, subject: str, payload: bytes, *, msg_id: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        del headers
        self.published.append((subject, payload, msg_id))


@dataclass
class ScriptedRunner:
    outcome: Any

    async def run(self, item: WorkItem, *, on_start: Callable[[], Awaitable[None]]) -> Any:
        del item, on_start
        return self.outcome


def _item() -> WorkItem:
    return WorkItem(
        mission_id=uuid.uuid4(),
        step_id=uuid.uuid4(),
        step_key="count",
        attempt=1,
        agent="wordcount",
        input={},
        timeout_s=5,
        workflow="wf",
    )


def _msg(data: bytes, *, delivered: int = 1) -> Msg:
    return cast(
        Msg,
        SimpleNamespace(
            data=data, subject="coo.work.wordcount", headers=None, metadata=SimpleNamespace(num_delivered=delivered)
        ),
    )


def _handler(outcome: Any) -> tuple[WorkItemHandler, RecordingBus]:
    settings = Settings()
    bus = RecordingBus(Subjects(settings))
    handler = WorkItemHandler(
        settings,
        cast(Any, bus),
        cast(Any, ScriptedRunner(outcome)),
        metrics=WorkerMetrics(CollectorRegistry()),
        worker_id="w-1",
    )
    return handler, bus


async def test_a_result_is_published_on_the_results_subject_with_its_dedupe_id() -> None:
    result = SimpleNamespace(to_bytes=lambda: b'{"kind":"work_result"}', msg_id="s:1:result")
    handler, bus = _handler(result)
    await handler(_msg(_item().to_bytes()))
    assert bus.published == [(bus.subjects.results, b'{"kind":"work_result"}', "s:1:result")]
    assert handler.busy == 0


async def test_an_undecodable_message_is_undeliverable_and_nothing_is_published() -> None:
    handler, bus = _handler(None)
    with pytest.raises(Undeliverable, match="cannot decode work item"):
        await handler(_msg(b"{}"))
    assert bus.published == [] and handler.busy == 0


async def test_a_paused_mission_defers_the_item_and_a_stale_one_drops_it() -> None:
    waiting, bus = _handler(Verdict("wait", "mission is paused (manual)"))
    with pytest.raises(Deferred, match="paused") as deferred:
        await waiting(_msg(_item().to_bytes()))
    assert deferred.value.delay_s == waiting.settings.pause_recheck_s
    dropping, dropped_bus = _handler(Verdict("drop", "the step is cancelled"))
    await dropping(_msg(_item().to_bytes()))
    assert bus.published == [] and dropped_bus.published == []
