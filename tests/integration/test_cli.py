"""The CLI: `coo keys create` makes a key the API accepts (only its hash is stored); `coo submit`
and `coo mission` work through the REST API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY, Stack, db_fetch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


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


def _cli_env(stack: Stack) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
        "COO_API_URL": stack.orchestrator.url,
        "COO_API_KEY": API_KEY,
    }


async def _coo(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        env=_cli_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_submit_and_mission_through_the_api(stack: Stack) -> None:
    submitted = await _coo(stack, "submit", str(EXAMPLES / "hello.yaml"), "--input", '{"text": "a b c\\n"}', "--wait")
    assert submitted.returncode == 0, submitted.stderr
    mission = json.loads(submitted.stdout)
    assert mission["status"] == "succeeded"
    assert mission["output"] == {"count": {"lines": 1, "words": 3, "bytes": 6}}

    shown = await _coo(stack, "mission", mission["id"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == mission["id"]


async def test_cli_errors_name_the_problem(stack: Stack) -> None:
    bad_input = await _coo(stack, "submit", str(EXAMPLES / "hello.yaml"), "--input", "[1, 2]")
    assert bad_input.returncode == 2 and "--input must be a JSON object" in bad_input.stderr
    missing = await _coo(stack, "mission", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "404" in missing.stderr and "not found" in missing.stderr
