"""DBOS peer: DBOS Transact is a library, so its "server" is the driver process itself; its system
database is a fresh database on the same Postgres as COO, dropped afterwards.

Shapes: 1 step = a workflow calling one step; chain = a workflow calling three steps in sequence;
fan-out = a workflow that enqueues 100 one-step child workflows on a DBOS queue and waits for them
(DBOS's documented way to run work in parallel). Completion is read in bulk from
``dbos.workflow_status`` (status, completed_at)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from typing_extensions import override

from bench import stats
from bench.budget import Budget
from bench.config import Profile
from bench.infra import Infra, connect, create_database, drop_database
from bench.peers.driver import Driver, main
from bench.peers.runner import drive

ENDED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


class DbosDriver(Driver):
    name = "dbos"
    about = (
        "DBOS Transact (a library: workflows run inside the driver process), system database on the same "
        "Postgres (own database); started with DBOS.start_workflow from 16 threads; fan-out = 100 child "
        "workflows on a DBOS queue (default 1 s queue polling)"
    )
    submit_concurrency = 16

    def __init__(self, spec: dict[str, Any]) -> None:
        self.url = str(spec["system_database_url"])
        self.tag = uuid.uuid4().hex[:8]

    @override
    async def setup(self) -> None:
        from bench.peers import dbos_app

        self.app = dbos_app
        await asyncio.to_thread(dbos_app.launch, self.url)
        self.conn = await connect(self.url)

    @override
    async def teardown(self) -> None:
        await self.conn.close()
        await asyncio.to_thread(self.app.shutdown)

    @override
    async def submit(self, kind: str, label: str, i: int) -> Hashable:
        workflow_id = f"{label}-{self.tag}-{i}"
        await asyncio.to_thread(self.app.start, kind, workflow_id, i)
        return workflow_id

    @override
    async def count_done(self, kind: str, label: str, handles: list[Hashable]) -> int:
        value = await self.conn.fetchval(
            "SELECT count(*) FROM dbos.workflow_status "
            "WHERE workflow_uuid = ANY($1::text[]) AND status = ANY($2::text[])",
            [str(h) for h in handles],
            list(ENDED),
        )
        return int(value or 0)

    @override
    async def outcomes(
        self, kind: str, label: str, handles: list[Hashable]
    ) -> dict[Hashable, tuple[str, float | None]]:
        rows = await self.conn.fetch(
            "SELECT workflow_uuid, status, coalesce(completed_at, updated_at) AS done_ms FROM dbos.workflow_status "
            "WHERE workflow_uuid = ANY($1::text[]) AND status = ANY($2::text[])",
            [str(h) for h in handles],
            list(ENDED),
        )
        return {
            str(r["workflow_uuid"]): (
                "succeeded" if r["status"] == "SUCCESS" else str(r["status"]).lower(),
                float(r["done_ms"]) / 1000.0 if r["done_ms"] is not None else None,
            )
            for r in rows
        }


def run(infra: Infra, profile: Profile, budget: Budget, b4_rate: float, results_dir: Path) -> dict[str, Any]:
    del results_dir
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        return stats.skipped(f"dbos not installed: {exc}")
    name = f"dbos_bench_{uuid.uuid4().hex[:10]}"
    try:
        url = asyncio.run(create_database(infra.database_url, name))
    except Exception as exc:
        return stats.skipped(f"cannot create a database for DBOS on COO's Postgres: {exc!r}")
    try:
        return drive(
            "dbos",
            {"system_database_url": url},
            profile=profile,
            budget=budget,
            b4_rate=b4_rate,
            work_dir=infra.work_dir / "dbos",
        )
    finally:
        asyncio.run(drop_database(infra.database_url, name))


if __name__ == "__main__":
    main(DbosDriver)
