"""B7's baseline: FastAPI doing what ``GET /v1/missions/{id}`` must at least do, one asyncpg fetch of
the mission's row (``SELECT * FROM missions WHERE id = $1``, in the database and schema the run's COO
uses, from a pool opened in the app's lifespan) returned as JSON, served by uvicorn like COO's
services are (``python -m uvicorn bench.baseline_app:app``).

Configured from the environment: ``BENCH_BASELINE_DSN`` (a libpq/asyncpg URL) and
``BENCH_BASELINE_SCHEMA``."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request

POOL_SIZE = 10  # COO's default db_pool_size


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    schema = os.environ.get("BENCH_BASELINE_SCHEMA", "public")
    app.state.pool = await asyncpg.create_pool(
        os.environ["BENCH_BASELINE_DSN"],
        min_size=1,
        max_size=POOL_SIZE,
        server_settings={"search_path": schema},
    )
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/v1/missions/{mission_id}")
async def get_mission(mission_id: uuid.UUID, request: Request) -> dict[str, Any]:
    pool: asyncpg.Pool = request.app.state.pool
    row = await pool.fetchrow("SELECT * FROM missions WHERE id = $1", mission_id)
    if row is None:
        raise HTTPException(status_code=404, detail="mission not found")
    return dict(row)
