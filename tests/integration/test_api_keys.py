"""`coo keys create` makes a key the API accepts; only its hash is stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.conftest import Stack, db_fetch


async def test_a_created_key_is_accepted_and_stored_as_a_hash(stack: Stack) -> None:
    s = stack.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
        "COO_DATABASE_URL": s.database_url or "",
        "COO_NATS_URL": s.nats_url or "",
        "COO_DB_SCHEMA": s.db_schema,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "keys", "create", "ci-robot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("coo_") and len(key) > 30

    async with stack.client(key=key) as client:
        assert (await client.get("/v1/agents")).status_code == 200
    async with stack.client(key=key + "x") as client:
        assert (await client.get("/v1/agents")).status_code == 401

    (row,) = await db_fetch(s, "SELECT name, hash FROM api_keys")
    assert row["name"] == "ci-robot" and key not in row["hash"] and len(row["hash"]) == 64
