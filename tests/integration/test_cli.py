"""The CLI: `coo keys create` makes a key the API accepts (only its hash is stored); `coo submit`
and `coo mission` work through the REST API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY, Stack, db_fetch, wait_for

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


async def test_logs_follow_streams_until_the_mission_ends(stack: Stack) -> None:
    submitted = await _coo(stack, "submit", str(EXAMPLES / "hello.yaml"), "--input", '{"text": "a\\n"}')
    assert submitted.returncode == 0, submitted.stderr
    mission_id = json.loads(submitted.stdout)["id"]
    followed = await _coo(stack, "logs", mission_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert "mission.submitted" in lines[0] and "mission.succeeded" in lines[-1]
    assert any("step.succeeded [count]" in line for line in lines)
    as_json = await _coo(stack, "logs", mission_id, "--json")
    assert [json.loads(line)["type"] for line in as_json.stdout.splitlines()][-1] == "mission.succeeded"


async def test_dlq_list_and_replay_and_control_errors(stack: Stack) -> None:
    empty = await _coo(stack, "dlq", "list")
    assert empty.returncode == 0 and "no dead letters" in empty.stdout
    strict = {"model": "offline", "output_schema": {"type": "object", "required": ["never"]}}
    async with stack.client() as client:
        assert (await client.put("/v1/agents/echo", json=strict)).status_code in (200, 201)
        workflow = {"name": "strict", "steps": [{"id": "e", "agent": "echo", "input": {"a": 1}}]}
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        mission_id = (await client.post("/v1/missions", json={"workflow": "strict"})).json()["id"]

        async def failed() -> bool:
            return (await client.get(f"/v1/missions/{mission_id}")).json()["status"] == "failed"

        await wait_for(failed, timeout_s=30, what="the mission to fail")

    listed = await _coo(stack, "dlq", "list", "--pending")
    assert (
        listed.returncode == 0 and "OUTPUT_INVALID" in listed.stdout and f"mission {mission_id} step e" in listed.stdout
    )
    letter_id = listed.stdout.split()[0]
    replayed = await _coo(stack, "dlq", "replay", letter_id)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["attempt"] == 2
    again = await _coo(stack, "dlq", "replay", letter_id)
    assert again.returncode == 1 and "already replayed" in again.stderr

    pause = await _coo(stack, "pause", "00000000-0000-0000-0000-000000000000")
    assert pause.returncode == 1 and "not found" in pause.stderr
    resume = await _coo(stack, "resume", mission_id, "--add-budget-usd", "lots")
    assert resume.returncode == 1 and "--add-budget-usd: 'lots' is not a number" in resume.stderr
