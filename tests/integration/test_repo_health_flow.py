"""repo-health end to end on the offline model: the scan finds the planted secrets, review and
compliance run after it, the patch step waits for approval and Slack is asked, `coo approve`
continues it, the notifier's message reaches Slack, and every attempt's full result is readable
through the API."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.cli.embedded import free_port
from services.common.db.migrate import upgrade_async
from tests.conftest import (
    Infra,
    RunningApp,
    Stack,
    delete_streams,
    drop_schema,
    make_settings,
    start_stack,
    stop_stack,
    wait_for,
)
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import FakeSlack
from tests.integration.test_cli import _coo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4" * 5


@pytest.fixture
async def health(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Stack, Path, FakeSlack]]:
    repos = tmp_path / "repos"
    shutil.copytree(EXAMPLES / "repos" / "sample-app", repos / "sample-app")
    slack = FakeSlack().start()
    settings = make_settings(
        infra, tmp_path / "data", sandbox_source_roots=str(repos), slack_webhook_url=SecretStr(slack.url)
    )
    await upgrade_async(settings)
    stack = await start_stack(settings)
    try:
        yield stack, repos / "sample-app", slack
    finally:
        await stop_stack(stack)
        slack.stop()
        await drop_schema(infra.database_url, settings.db_schema)
        await delete_streams(infra.nats_url, settings.bus_prefix)


async def test_repo_health_runs_end_to_end_with_an_approval(health: tuple[Stack, Path, FakeSlack]) -> None:
    stack, repo, slack = health
    async with stack.client() as client:
        created = await client.post(
            "/v1/workflows",
            content=(EXAMPLES / "workflows" / "repo-health.yaml").read_bytes(),
            headers={"Content-Type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        accepted = await client.post("/v1/missions", json={"workflow": "repo-health", "input": {"repo": str(repo)}})
        assert accepted.status_code == 202, accepted.text
        mid = accepted.json()["id"]

        async def steps() -> dict[str, dict[str, Any]]:
            mission = (await client.get(f"/v1/missions/{mid}")).json()
            return {s["key"]: s for s in mission["steps"]}

        async def waiting() -> bool:
            current = await steps()
            assert all(s["status"] != "failed" for s in current.values()), current
            return current["patch"]["status"] == "awaiting_approval"

        await wait_for(waiting, timeout_s=90, what="the patch step to wait for approval")
        before = await steps()
        summary = before["scan"]["output"]["summary"]
        assert summary["total"] >= 3 and summary["high"] >= 2, summary
        rules = {f["rule"] for f in before["scan"]["output"]["findings"]}
        assert {"aws-access-key-id", "anthropic-api-key"} <= rules or len(rules) >= 3, rules
        assert before["review"]["status"] == before["compliance"]["status"] == "succeeded"
        assert before["review"]["input"]["findings_total"] == summary["total"]  # the number itself
        assert before["notify"]["status"] == "pending"

        async def asked() -> bool:
            return any(mid in json.dumps(m) and "coo approve" in json.dumps(m) for m in slack.messages)

        await wait_for(asked, timeout_s=20, what="the approval request on Slack")

        approved = await _coo(stack, "approve", mid, "patch", "--reason", "remove the keys")
        assert approved.returncode == 0, approved.stderr
        assert json.loads(approved.stdout)["applied"] is True

        async def finished() -> bool:
            status = (await client.get(f"/v1/missions/{mid}")).json()["status"]
            return status in ("succeeded", "failed", "cancelled")

        await wait_for(finished, timeout_s=90, what="the mission to finish")
        mission = (await client.get(f"/v1/missions/{mid}")).json()
        assert mission["status"] == "succeeded", mission["error"]
        after = {s["key"]: s for s in mission["steps"]}
        assert after["patch"]["output"]["files_changed"], after["patch"]["output"]

        assert after["deliver"]["status"] == "skipped", "no github_repo: no pull request"
        results = {}
        for key in (k for k in after if k != "deliver"):
            response = await client.get(f"/v1/missions/{mid}/steps/{key}/results")
            assert response.status_code == 200
            results[key] = response.json()
            assert results[key] and results[key][-1]["success"] is True
            assert results[key][-1]["provider"] == "offline"
        assert any(call["name"] == "run_command" for call in results["scan"][-1]["tool_calls"])
        assert any(call["name"] == "post_slack" for call in results["notify"][-1]["tool_calls"])
        # The patcher's first run left a secret; its check said which line; the second run fixed it.
        (patched,) = results["patch"]
        first, second = patched["iterations"]
        assert (first["error_type"], second["error_type"]) == ("TEST_FAILED", None)
        failed = {c["name"]: c for c in first["verification"]["checks"]}["secrets-removed"]
        assert "app/config.py:9" in failed["output_tail"] and "hunter2" not in json.dumps(patched)
        assert "password" in after["patch"]["output"]["patch"] and "AKIA" not in after["patch"]["output"]["patch"]

    notices = [m for m in slack.messages if "coo approve" not in json.dumps(m)]
    assert notices, "the notifier's message did not reach Slack"
    assert any("repo-health" in json.dumps(m) or str(summary["total"]) in json.dumps(m) for m in notices)
    for message in slack.messages:
        text = json.dumps(message)
        assert "AKIA" not in text and "sk-ant-api" not in text, "a planted secret reached Slack"


@pytest.fixture
async def health_on_github(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Stack, Path, FakeGitHub]]:
    """repo-health's stack with a fake GitHub holding the same sample-app at acme/sample-app."""
    repos = tmp_path / "repos"
    shutil.copytree(EXAMPLES / "repos" / "sample-app", repos / "sample-app")
    source = repos / "sample-app"
    github = FakeGitHub(GITHUB_TOKEN)
    files = {str(p.relative_to(source)): p.read_text() for p in sorted(source.rglob("*")) if p.is_file()}
    github.add_repo("acme/sample-app", files)
    server = RunningApp(github.app(), free_port())
    await server.start()
    settings = make_settings(
        infra,
        tmp_path / "data",
        sandbox_source_roots=str(repos),
        github_api_url=server.url,
        github_token=GITHUB_TOKEN,
        github_mode="fail_fast",
    )
    await upgrade_async(settings)
    stack = await start_stack(settings)
    try:
        yield stack, source, github
    finally:
        github.close()
        await stop_stack(stack)
        await server.stop()
        await drop_schema(infra.database_url, settings.db_schema)
        await delete_streams(infra.nats_url, settings.bus_prefix)


async def test_repo_health_delivers_the_approved_patch_as_a_pull_request(
    health_on_github: tuple[Stack, Path, FakeGitHub],
) -> None:
    stack, repo, github = health_on_github
    original = (repo / "app" / "config.py").read_text()
    async with stack.client() as client:
        created = await client.post(
            "/v1/workflows",
            content=(EXAMPLES / "workflows" / "repo-health.yaml").read_bytes(),
            headers={"Content-Type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        body = {"workflow": "repo-health", "input": {"repo": str(repo), "github_repo": "acme/sample-app"}}
        mid = (await client.post("/v1/missions", json=body)).json()["id"]

        async def waiting() -> bool:
            mission = (await client.get(f"/v1/missions/{mid}")).json()
            return {s["key"]: s["status"] for s in mission["steps"]}["patch"] == "awaiting_approval"

        await wait_for(waiting, timeout_s=90, what="the patch step to wait for approval")
        approved = await client.post(f"/v1/missions/{mid}/steps/patch/approve", json={"reason": "ship it"})
        assert approved.status_code == 200, approved.text

        async def finished() -> dict[str, Any] | None:
            mission: dict[str, Any] = (await client.get(f"/v1/missions/{mid}")).json()
            return mission if mission["status"] in ("succeeded", "failed", "cancelled") else None

        mission = await wait_for(finished, timeout_s=90, what="the mission to finish")
    assert mission["status"] == "succeeded", mission["error"]
    steps = {s["key"]: s for s in mission["steps"]}
    pr = steps["deliver"]["output"]["pr"]
    assert pr is not None and steps["deliver"]["output"]["mode"] == "fail_fast", steps["deliver"]["output"]

    # The diff the patcher stored has its secrets redacted; the pull request's commit holds the
    # real file with exactly the patched lines changed, and no secret.
    stored = steps["patch"]["output"]["patch"]
    assert "[REDACTED]" in stored and "AKIA" not in stored
    (pull,) = github.repos["acme/sample-app"].pulls
    assert (pull.head, pull.base, pull.number) == (pr["branch"], "main", pr["number"])
    committed = github.repos["acme/sample-app"].files(pr["branch"])["app/config.py"]
    assert "AKIA" not in committed and "sk-ant-" not in committed and "hunter2" not in committed
    assert committed.count("\n") == original.count("\n")
    kept = [
        line for line in original.splitlines() if "AKIA" not in line and "sk-ant-" not in line and "hunter2" not in line
    ]
    assert all(line in committed.splitlines() for line in kept), "only the secrets' lines changed"
    assert 'AWS_ACCESS_KEY_ID = "<set from environment: AWS_ACCESS_KEY_ID>"' in committed
