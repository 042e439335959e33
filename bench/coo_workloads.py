"""COO's workloads. Submission goes only through the REST API. A mission's completion is the moment
its terminal timeline event (``mission.succeeded`` / ``failed`` / ``cancelled``) reaches the
measuring process: the orchestrator publishes it on core NATS (``<prefix>.coo.timeline.<id>``) only
after the transaction that ended the mission committed, so it is when the completion became
visible, not ``missions.finished_at`` (set inside that transaction, before COMMIT). The ``missions``
table is still polled in bulk (one ``GROUP BY status`` query per poll) to know when everything has
ended, and its ``finished_at`` stands in for a mission whose event was missed (counted and reported
as ``completion_fallbacks``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats

from bench import stats
from bench.coo import CooClient, CooStack, chain3, fanout, one_step
from bench.infra import connect
from services.common.bus.subjects import Subjects

TERMINAL = ("succeeded", "failed", "cancelled")
TERMINAL_EVENTS = {"mission.succeeded", "mission.failed", "mission.cancelled"}
POLL_S = 0.25
EVENT_GRACE_S = 2.0  # after the table shows every mission ended, how long the last events may take
COMPLETION_NOTE = (
    "completion = receipt of the mission's terminal timeline event (core NATS, published after COMMIT); "
    "the missions table is polled (GROUP BY status) to know when all have ended, and its finished_at is "
    "used only for a mission whose event was missed; submission via POST /v1/missions"
)
TABLE_NOTE = "completion read in bulk from the missions table (status, finished_at); submission via POST /v1/missions"


class Completions:
    """Receipt times of terminal timeline events, from a core NATS subscription to
    ``<prefix>.coo.timeline.*`` held by a thread of its own (its own event loop, so that a busy
    submitting loop does not delay the timestamps). Start it before submitting."""

    def __init__(self, stack: CooStack) -> None:
        self.url = stack.infra.nats_url
        self.subject = Subjects(stack.settings()).timeline_all
        self.done: dict[str, tuple[str, float]] = {}  # mission id -> (event type, receipt time)
        self.events = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="coo-completions", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._subscribe())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _subscribe(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1, name="bench-completions")

        async def on_event(msg: Any) -> None:
            received = time.time()
            self.events += 1
            event = json.loads(msg.data)
            if event.get("type") in TERMINAL_EVENTS:
                self.done.setdefault(str(event.get("mission_id")), (str(event["type"]), received))

        try:
            await nc.subscribe(self.subject, cb=on_event, pending_msgs_limit=-1, pending_bytes_limit=-1)
            await nc.flush(timeout=5)
            self._ready.set()
            await self._stop.wait()
        finally:
            await nc.close()

    def start(self, timeout_s: float = 10.0) -> Completions:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"timeline subscription to {self.subject} failed: {self._error!r}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)

    def completed_at(self, mission_id: str) -> float | None:
        got = self.done.get(mission_id)
        return got[1] if got is not None and got[0] == "mission.succeeded" else None

    async def wait_for(self, mission_ids: list[str], timeout_s: float = EVENT_GRACE_S) -> None:
        """Until every one of ``mission_ids`` has its terminal event, or ``timeout_s``."""
        give_up = time.monotonic() + timeout_s
        # the events arrive on another thread's loop: polled, not awaited
        while time.monotonic() < give_up and any(m not in self.done for m in mission_ids):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def completion_times(
    rows: dict[str, tuple[str, float | None]], ids: list[str], completions: Completions | None
) -> tuple[dict[str, float], int]:
    """mission id -> completion time of each succeeded one among ``ids`` (the event's receipt, else the
    table's finished_at), and how many fell back to the table."""
    out: dict[str, float] = {}
    fallbacks = 0
    for mid in ids:
        status, fin = rows.get(mid, ("missing", None))
        if status != "succeeded":
            continue
        at = completions.completed_at(mid) if completions is not None else None
        if at is None:
            if fin is None:
                continue
            if completions is not None:
                fallbacks += 1
            at = fin
        out[mid] = at
    return out, fallbacks


@dataclass
class MissionTable:
    """A read-only view of COO's ``missions`` table in the run's schema."""

    conn: asyncpg.Connection
    queries: int = 0  # how many transactions this view ran (B6 subtracts them)

    @classmethod
    async def open(cls, stack: CooStack) -> MissionTable:
        return cls(await connect(stack.infra.database_url, stack.schema))

    async def close(self) -> None:
        await self.conn.close()

    async def counts(self, workflow: str) -> dict[str, int]:
        self.queries += 1
        rows = await self.conn.fetch(
            "SELECT status, count(*) AS n FROM missions WHERE workflow_name = $1 GROUP BY status", workflow
        )
        return {str(r["status"]): int(r["n"]) for r in rows}

    async def finished(self, workflow: str) -> dict[str, tuple[str, float | None]]:
        """id -> (status, finished_at as epoch seconds)."""
        self.queries += 1
        rows = await self.conn.fetch(
            "SELECT id::text AS id, status, extract(epoch FROM finished_at)::float8 AS fin "
            "FROM missions WHERE workflow_name = $1",
            workflow,
        )
        return {str(r["id"]): (str(r["status"]), r["fin"]) for r in rows}


@dataclass
class Workflows:
    """One registered workflow per workload, so that each workload's missions are counted apart."""

    client: CooClient
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    async def register(self, kind: str, label: str) -> str:
        name = f"bench_{label}_{self.tag}"
        builders: dict[str, Callable[[str], dict[str, Any]]] = {
            "one_step": one_step,
            "chain3": chain3,
            "fanout": fanout,
        }
        await self.client.register_workflow(builders[kind](name))
        return name


@dataclass
class Submitted:
    ids: list[str] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    first: float = 0.0
    last: float = 0.0


async def submit_batch(
    client: CooClient | Sequence[CooClient], workflow: str, count: int, concurrency: int, deadline: float
) -> Submitted:
    """``count`` missions from ``concurrency`` concurrent submitters, as fast as the API accepts them;
    with several clients (one per orchestrator replica), submitter ``j`` uses client ``j mod n``."""
    clients = [client] if isinstance(client, CooClient) else list(client)
    out = Submitted(first=time.time())
    next_index = iter(range(count))

    async def submitter(client: CooClient) -> None:
        for i in next_index:
            if time.monotonic() > deadline:
                return
            try:
                out.ids.append(await client.submit(workflow, {"value": i}))
            except Exception as exc:
                out.errors += 1
                out.first_error = out.first_error or repr(exc)[:300]

    await asyncio.gather(*(submitter(clients[j % len(clients)]) for j in range(concurrency)))
    out.last = time.time()
    return out


async def wait_terminal(
    table: MissionTable, workflow: str, expected: Callable[[], int | None], deadline: float
) -> bool:
    """Poll until ``expected()`` missions (None: still submitting) are terminal; False on deadline."""
    while time.monotonic() < deadline:
        total = expected()
        counts = await table.counts(workflow)
        if total is not None and sum(counts.get(s, 0) for s in TERMINAL) >= total:
            return True
        await asyncio.sleep(POLL_S)
    return False


async def run_batch(
    client: CooClient | Sequence[CooClient],
    table: MissionTable,
    workflow: str,
    *,
    count: int,
    steps_per_mission: int,
    concurrency: int,
    deadline_s: float,
    unit: str,
    completions: Completions | None = None,
) -> dict[str, Any]:
    """A closed batch: submit ``count`` missions, wait for all to end; each completion is its
    terminal event's receipt (``completions``) or, without one, the table's ``finished_at``."""
    deadline = time.monotonic() + deadline_s
    submitted: list[Submitted] = []

    async def submit() -> None:
        submitted.append(await submit_batch(client, workflow, count, concurrency, deadline))

    submit_task = asyncio.create_task(submit())
    try:
        done = await wait_terminal(
            table, workflow, lambda: len(submitted[0].ids) if submitted else None, deadline=deadline
        )
    finally:
        if not submit_task.done():
            submit_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await submit_task
    sub = submitted[0] if submitted else Submitted(first=time.time(), last=time.time())
    if completions is not None:
        await completions.wait_for(sub.ids)
    rows = await table.finished(workflow)
    times, fallbacks = completion_times(rows, list(rows), completions)
    ok = list(times.values())
    failed = sum(1 for status, _ in rows.values() if status in ("failed", "cancelled"))
    unfinished = sum(1 for status, _ in rows.values() if status not in TERMINAL)
    note = stats_note(sub)
    if completions is not None:
        note += f"; {fallbacks} completions from the table's finished_at (terminal event not received)"
    result = stats.throughput(
        unit=unit,
        items=count,
        steps_per_item=steps_per_mission,
        completed=len(ok),
        failed=failed,
        unfinished=unfinished,
        submit_errors=sub.errors,
        first_submit=sub.first,
        last_submit=sub.last,
        last_completion=max(ok) if ok else None,
        timed_out=not done,
        note=note,
    )
    result["completion_source"] = "timeline event after COMMIT" if completions is not None else "finished_at"
    if completions is not None:
        result["completion_fallbacks"] = fallbacks
    return result


def stats_note(sub: Submitted) -> str:
    parts = [f"{len(sub.ids)} submitted in {sub.last - sub.first:.2f}s"]
    if sub.errors:
        parts.append(f"{sub.errors} submit errors, first: {sub.first_error}")
    return "; ".join(parts)


async def run_open_loop(
    client: CooClient,
    table: MissionTable,
    workflow: str,
    *,
    rate_per_s: float,
    duration_s: float,
    max_missions: int,
    drain_s: float,
    max_in_flight: int = 256,
    completions: Completions | None = None,
) -> dict[str, Any]:
    """Poisson arrivals at ``rate_per_s``; latency = completion (the terminal event's receipt, else
    ``finished_at``) - the arrival's scheduled time (so a slow API cannot hide queueing: no
    coordinated omission)."""
    offsets = stats.poisson_arrivals(rate_per_s, duration_s, max_missions)
    sent: dict[str, float] = {}
    errors: list[str] = []
    in_flight: set[asyncio.Task[None]] = set()
    dropped = 0
    max_lag = 0.0

    async def one(i: int, scheduled: float) -> None:
        try:
            sent[await client.submit(workflow, {"value": i})] = scheduled
        except Exception as exc:
            errors.append(repr(exc)[:300])

    t0 = time.time()
    m0 = time.monotonic()
    for i, offset in enumerate(offsets):
        delay = m0 + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, time.monotonic() - (m0 + offset))
        if len(in_flight) >= max_in_flight:
            dropped += 1
            continue
        task = asyncio.create_task(one(i, t0 + offset))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=drain_s)
    deadline = time.monotonic() + drain_s
    await wait_terminal(table, workflow, lambda: len(sent), deadline)
    if completions is not None:
        await completions.wait_for(list(sent))
    rows = await table.finished(workflow)
    times, fallbacks = completion_times(rows, list(sent), completions)
    latencies = [at - sent[mid] for mid, at in times.items()]
    failed = sum(1 for mid in sent if mid in rows and rows[mid][0] in ("failed", "cancelled"))
    unfinished = sum(1 for mid in sent if mid not in rows or rows[mid][0] not in TERMINAL)
    note = COMPLETION_NOTE if completions is not None else TABLE_NOTE
    if completions is not None:
        note += f"; {fallbacks} completions from the table's finished_at (terminal event not received)"
    if dropped:
        note += f"; {dropped} arrivals not sent ({max_in_flight} submissions already in flight)"
    if errors:
        note += f"; first submit error: {errors[0]}"
    result = stats.latency(
        target_rate_per_s=rate_per_s,
        duration_s=duration_s,
        scheduled=len(offsets),
        sent=len(sent) + len(errors),
        latencies_s=latencies,
        failed=failed,
        unfinished=unfinished,
        submit_errors=len(errors),
        max_send_lag_s=max_lag,
        note=note,
    )
    result["completion_source"] = "timeline event after COMMIT" if completions is not None else "finished_at"
    if completions is not None:
        result["completion_fallbacks"] = fallbacks
    return result


class RssSampler:
    """Samples each COO service's RSS every ``interval_s`` while running."""

    def __init__(self, stack: CooStack, interval_s: float = 0.5) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.samples: dict[str, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for service, rss in self.stack.rss_bytes().items():
                self.samples.setdefault(service, []).append(rss)
            await asyncio.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, dict[str, float]]:
        mib = 1024 * 1024
        return {
            service: {
                "peak_mib": round(max(values) / mib, 1),
                "mean_mib": round(sum(values) / len(values) / mib, 1),
                "samples": len(values),
            }
            for service, values in self.samples.items()
            if values
        }


def rss_now_mib(stack: CooStack) -> dict[str, float]:
    return {service: round(rss / (1024 * 1024), 1) for service, rss in stack.rss_bytes().items()}
