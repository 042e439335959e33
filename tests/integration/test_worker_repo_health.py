"""repo-health on the offline model through the real services: the scanner finds the planted
secrets in a copy of the sample repository, review and compliance run in parallel, and the patch
step is reached. Also: a paused mission's work item waits in the queue, and step verification
checks run in the attempt's workspace (their report stored; a failed check → VERIFICATION_FAILED)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.db.migrate import upgrade_async
from services.worker.app import create_app as worker_app
from tests.conftest import (
    Infra,
    RunningApp,
    Stack,
    db_fetch,
    delete_streams,
    drop_schema,
    make_settings,
    start_stack,
    stop_stack,
    wait_for,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
async def repo_stack(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Stack, Path]]:
    repos = tmp_path / "repos"
    shutil.copytree(EXAMPLES / "repos" / "sample-app", repos / "sample-app")
    settings = make_settings(infra, tmp_path / "data", sandbox_source_roots=str(repos), pause_recheck_s=0.5)
    await upgrade_async(settings)
    stack = await start_stack(settings)
    try:
        yield stack, repos / "sample-app"
    finally:
        await stop_stack(stack)
        await drop_schema(infra.database_url, settings.db_schema)
        await delete_streams(infra.nats_url, settings.bus_prefix)


async def step_of(stack: Stack, mission_id: str, key: str) -> dict[str, Any]:
    async with stack.client() as client:
        mission = (await client.get(f"/v1/missions/{mission_id}")).json()
    return next(s for s in mission["steps"] if s["key"] == key)


async def test_repo_health_scans_reviews_checks_and_reaches_the_patch_step(repo_stack: tuple[Stack, Path]) -> None:
    stack, repo = repo_stack
    async with stack.client() as client:
        created = await client.post(
            "/v1/workflows",
            content=(EXAMPLES / "workflows" / "repo-health.yaml").read_bytes(),
            headers={"Content-Type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        accepted = await client.post("/v1/missions", json={"workflow": "repo-health", "input": {"repo": str(repo)}})
        assert accepted.status_code == 202, accepted.text
    mission_id = accepted.json()["id"]

    async def patch_reached() -> dict[str, Any] | None:
        step = await step_of(stack, mission_id, "patch")
        return step if step["status"] not in ("pending", "ready") else None

    patch = await wait_for(patch_reached, timeout_s=90, what="the patch step to be reached")
    assert patch["status"] in ("awaiting_approval", "dispatched", "running", "succeeded"), patch

    scan = await step_of(stack, mission_id, "scan")
    assert scan["status"] == "succeeded"
    rules = {(f["file"], f["rule"]) for f in scan["output"]["findings"]}
    assert {
        ("app/config.py", "aws-access-key-id"),
        ("app/config.py", "anthropic-api-key"),
        ("app/config.py", "hardcoded-password"),
    } <= rules
    assert scan["output"]["summary"]["high"] >= 2
    # The kept scanners ran in the sandbox and all of them worked: detect-secrets (the AWS key is
    # its finding, under the patcher's rule name), bandit (test id and name), the remaining greps.
    assert "errors" not in scan["output"], scan["output"]["errors"]
    assert {
        ("app/config.py", "aws-access-key-id"),
        ("app/server.py", "B602-subprocess-popen-with-shell-equals-true"),
        ("app/server.py", "B501-request-with-no-cert-validation"),
        ("app/server.py", "B307-eval"),
    } <= rules

    review, compliance = await step_of(stack, mission_id, "review"), await step_of(stack, mission_id, "compliance")
    assert review["status"] == compliance["status"] == "succeeded"
    assert review["input"]["findings_total"] == scan["output"]["summary"]["total"]  # a number, not a string
    assert compliance["output"]["passed"] is False

    # Every attempt's full result is readable, and no secret reached a stored row.
    async with stack.client() as client:
        (result,) = (await client.get(f"/v1/missions/{mission_id}/steps/scan/results")).json()
    assert result["provider"] == "offline" and result["success"] is True
    assert all(call["name"] == "run_command" and call["status"] in ("ok", "error") for call in result["tool_calls"])
    ran = {call["input"]["argv"][0]: call for call in result["tool_calls"]}
    for tool in ("detect-secrets", "bandit"):
        assert ran[tool]["status"] == "ok" and ran[tool]["exit_code"] == 0, ran[tool]
    rows = await db_fetch(
        stack.settings, "SELECT stdout, output::text AS output, tool_calls::text AS calls FROM agent_results"
    )
    stored = " ".join(f"{r['stdout']} {r['output']} {r['calls']}" for r in rows)
    assert "AKIAQ7EXAMPLEFAKE123" not in stored and "hunter2" not in stored and "sk-ant-api03" not in stored
    # The original repository is untouched: agents worked on copies.
    assert "AKIAQ7EXAMPLEFAKE123" in (repo / "app" / "config.py").read_text()


async def test_a_paused_missions_work_waits_in_the_queue_and_runs_after_resume(
    repo_stack: tuple[Stack, Path],
) -> None:
    stack, _ = repo_stack
    await stack.worker.stop()  # the work item waits in the stream while the mission gets paused
    async with stack.client() as client:
        created = await client.post("/v1/workflows", json={"name": "one", "steps": [{"id": "a", "agent": "echo"}]})
        assert created.status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": "one", "input": {}})
    mission_id = accepted.json()["id"]
    # Pause the mission between dispatch and run, as an operator (or a budget) would.

    async def dispatched() -> bool:
        return (await step_of(stack, mission_id, "a"))["status"] == "dispatched"

    await wait_for(dispatched, timeout_s=30, what="the step to be dispatched")
    await db_fetch(
        stack.settings, "UPDATE missions SET status = 'paused', pause_reason = 'manual' WHERE id = $1", mission_id
    )
    worker = RunningApp(worker_app(stack.settings), stack.settings.worker_port)
    await worker.start()
    stack.worker = worker

    async def deferred() -> bool:
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"{worker.url}/metrics")).text
        return any(
            line.startswith("coo_worker_deferred_total ") and float(line.split()[1]) >= 1 for line in body.splitlines()
        )

    await wait_for(deferred, timeout_s=30, what="the worker to defer the paused mission's work item")
    assert await db_fetch(stack.settings, "SELECT id FROM agent_results") == []

    await db_fetch(
        stack.settings, "UPDATE missions SET status = 'running', pause_reason = NULL WHERE id = $1", mission_id
    )

    async def ran() -> bool:
        return (await step_of(stack, mission_id, "a"))["status"] == "succeeded"

    await wait_for(ran, timeout_s=30, what="the step to run after resume")
    assert len(await db_fetch(stack.settings, "SELECT id FROM agent_results")) == 1


async def run_checked(stack: Stack, repo: str, checks: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    workflow = {"name": "checked", "steps": [{"id": "a", "agent": "echo", "input": {"repo": repo}, "checks": checks}]}
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": "checked", "input": {}})
        assert accepted.status_code == 202, accepted.text
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed") else None

        mission = await wait_for(finished, timeout_s=60, what="the mission to finish")
        (result,) = (await client.get(f"/v1/missions/{mission_id}/steps/a/results")).json()
    return mission, result


async def test_passing_checks_store_their_report(repo_stack: tuple[Stack, Any]) -> None:
    stack, repo = repo_stack
    mission, result = await run_checked(stack, str(repo), [{"name": "readme", "argv": ["test", "-f", "README.md"]}])
    assert mission["status"] == "succeeded", mission
    assert result["verification"]["passed"] is True
    assert [(c["name"], c["passed"], c["exit_code"]) for c in result["verification"]["checks"]] == [("readme", True, 0)]


async def test_a_failed_check_fails_the_step_with_verification_failed(repo_stack: tuple[Stack, Any]) -> None:
    stack, repo = repo_stack
    checks = [
        {"name": "readme", "argv": ["test", "-f", "README.md"]},
        {"name": "license", "argv": ["test", "-f", "LICENSE"]},
    ]
    mission, result = await run_checked(stack, str(repo), checks)
    assert mission["status"] == "failed", mission
    (step,) = mission["steps"]
    assert (step["status"], step["attempt"], step["error"]["type"]) == ("failed", 1, "VERIFICATION_FAILED")
    assert "license" in step["error"]["message"]
    assert result["success"] is False and result["error"]["type"] == "VERIFICATION_FAILED"
    assert [(c["name"], c["passed"]) for c in result["verification"]["checks"]] == [
        ("readme", True),
        ("license", False),
    ]
