"""The built-in ``github-pr`` agent through the whole stack: the real orchestrator and worker (from
NATS), the real githubkit client, and a local server speaking GitHub's REST API with an in-memory
repository. Each mode with GitHub up and down; a diff that does not apply; the token nowhere."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.embedded import free_port
from services.common.db.migrate import upgrade_async
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
from tests.fakes.github import FakeGitHub

TOKEN = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
REPO = "acme/app"
BASE_FILES = {
    "app.py": "import os\n\n\ndef main():\n    print('hello')\n\n\nif __name__ == '__main__':\n    main()\n",
    "old.txt": "to be removed\nsecond line\n",
    "README.md": "# app\n\nA small app.\n",
}
DIFF = re.sub(
    r"^~$",
    " ",
    """\
diff --git a/app.py b/app.py
index 1111111..2222222 100644
--- a/app.py
+++ b/app.py
@@ -3,7 +3,8 @@ import os
~
 def main():
-    print('hello')
+    name = os.environ.get('NAME', 'world')
+    print(f'hello {name}')
~
~
 if __name__ == '__main__':
     main()
diff --git a/NOTES.md b/NOTES.md
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/NOTES.md
@@ -0,0 +1,2 @@
+# Notes
+NAME sets who is greeted.
diff --git a/old.txt b/old.txt
deleted file mode 100644
index 4444444..0000000
--- a/old.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-to be removed
-second line
""",
    flags=re.MULTILINE,
)  # ~: an empty context line (a lone space)
EXPECTED_APP = BASE_FILES["app.py"].replace(
    "    print('hello')\n", "    name = os.environ.get('NAME', 'world')\n    print(f'hello {name}')\n"
)
BAD_DIFF = DIFF.replace("-    print('hello')", "-    print('goodbye')")

StackFactory = Callable[..., Awaitable[tuple[Stack, FakeGitHub]]]


@pytest.fixture
async def github_stack(infra: Infra, tmp_path: Path) -> AsyncIterator[StackFactory]:
    """A factory: ``await make(**settings)`` starts a fake GitHub holding acme/app and a stack pointed at it."""
    started: list[tuple[Stack, FakeGitHub, RunningApp]] = []

    async def make(**overrides: Any) -> tuple[Stack, FakeGitHub]:
        fake = FakeGitHub(TOKEN)
        fake.add_repo(REPO, BASE_FILES)
        server = RunningApp(fake.app(), free_port())
        await server.start()
        values: dict[str, Any] = {"github_api_url": server.url, "github_token": TOKEN, "github_mode": "best_effort"}
        values.update(overrides)
        settings = make_settings(infra, tmp_path / f"s{len(started)}", **values)
        await upgrade_async(settings)
        stack = await start_stack(settings)
        started.append((stack, fake, server))
        return stack, fake

    yield make
    for stack, fake, server in started:
        fake.close()
        await stop_stack(stack)
        await server.stop()
        await drop_schema(infra.database_url, stack.settings.db_schema)
        await delete_streams(infra.nats_url, stack.settings.bus_prefix)


async def run_pr(
    stack: Stack,
    *,
    diff: str = DIFF,
    mode: str | None = None,
    max_attempts: int = 3,
    timeout_s: float = 20,
    **extra: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Register a workflow with one github-pr step, run a mission: (mission, results, timeline)."""
    step_input: dict[str, Any] = {
        "github_repo": REPO,
        "base": "main",
        "title": "Greet by name",
        "body": "Reads NAME from the environment.",
        "diff": diff,
        **extra,
    }
    if mode is not None:
        step_input["mode"] = mode
    workflow = {
        "name": "deliver",
        "steps": [
            {
                "id": "deliver",
                "agent": "github-pr",
                "input": step_input,
                "timeout_s": timeout_s,
                "retry": {"max_attempts": max_attempts, "base": 0.1, "max": 0.2},
            }
        ],
    }
    async with stack.client() as client:
        registered = await client.post("/v1/workflows", json=workflow)
        assert registered.status_code == 201, registered.text
        accepted = await client.post("/v1/missions", json={"workflow": "deliver", "input": {}})
        assert accepted.status_code == 202, accepted.text
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        mission = await wait_for(finished, timeout_s=60, what="the mission to finish")
        results = (await client.get(f"/v1/missions/{mission_id}/steps/deliver/results")).json()
        timeline = (await client.get(f"/v1/missions/{mission_id}/timeline")).json()
    return mission, sorted(results, key=lambda r: r["attempt"]), timeline


async def metric(stack: Stack, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"{stack.worker.url}/metrics")).text
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def writes(fake: FakeGitHub) -> list[str]:
    return [r.name for r in fake.received if r.method != "GET"]


async def assert_token_nowhere(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    """Not in any row of any table (agent_results, timeline events, dead letters...), nor in the logs."""
    tables = await db_fetch(
        stack.settings,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        stack.settings.db_schema,
    )
    assert {"agent_results", "dead_letters"} <= {t["table_name"] for t in tables}
    for table in tables:
        name = table["table_name"]
        for record in await db_fetch(stack.settings, f'SELECT row_to_json(t)::text AS j FROM "{name}" t'):
            assert TOKEN not in record["j"], f"the GitHub token in a row of {name}"
    out, err = capfd.readouterr()
    assert TOKEN not in out and TOKEN not in err, "the GitHub token in the logs"


def assert_pr_opened(fake: FakeGitHub, output: dict[str, Any], branch: str | None = None) -> None:
    repo = fake.repos[REPO]
    pr = output["pr"]
    assert pr is not None and pr["url"].endswith(f"/pull/{pr['number']}")
    (pull,) = repo.pulls
    assert (pull.number, pull.head, pull.base, pull.title) == (pr["number"], pr["branch"], "main", "Greet by name")
    if branch is not None:
        assert pr["branch"] == branch
    head = repo.head(pr["branch"])
    assert head.parents == [repo.refs["heads/main"]], "the branch's commit sits on the base's head"
    assert head.message == "Greet by name\n\nReads NAME from the environment."
    files = repo.files(pr["branch"])
    assert files == {
        "app.py": EXPECTED_APP,
        "NOTES.md": "# Notes\nNAME sets who is greeted.\n",
        "README.md": "# app\n\nA small app.\n",
    }
    assert repo.files("main") == BASE_FILES, "the base branch is untouched"


# --- GitHub up ------------------------------------------------------------------------------------


async def test_fail_fast_opens_the_pull_request_and_records_each_call(
    github_stack: StackFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    stack, fake = await github_stack(github_mode="fail_fast")
    mission, results, timeline = await run_pr(stack)
    assert mission["status"] == "succeeded", mission
    (step,) = mission["steps"]
    assert step["output"]["mode"] == "fail_fast" and "warning" not in step["output"]
    mission_prefix = mission["id"][:8]
    assert_pr_opened(fake, step["output"], branch=f"coo/{mission_prefix}-deliver")

    (result,) = results
    assert result["provider"] == "builtin" and result["success"] is True
    names = [call["name"] for call in result["tool_calls"]]
    assert names[:3] == ["github.get_ref", "github.get_commit", "github.get_tree"]
    assert names[-4:] == ["github.create_tree", "github.create_commit", "github.create_ref", "github.create_pull"]
    assert names.count("github.create_blob") == 2  # app.py and NOTES.md; old.txt goes as sha null
    assert all(call["status"] == "ok" and call["duration_ms"] >= 0 for call in result["tool_calls"])
    assert all(call["input"]["repo"] == REPO for call in result["tool_calls"])
    assert "opened pull request" in result["stdout"]
    # The token went to GitHub in the Authorization header, and nowhere else.
    assert all(r.headers["authorization"].endswith(TOKEN) for r in fake.received)
    assert not [e for e in timeline if e["type"] == "github.failed"]
    await assert_token_nowhere(stack, capfd)


async def test_best_effort_with_github_up_opens_it_on_a_given_branch(github_stack: StackFactory) -> None:
    stack, fake = await github_stack()  # COO_GITHUB_MODE: best_effort
    mission, _, _ = await run_pr(stack, branch="feature/greet")
    assert mission["status"] == "succeeded", mission
    output = mission["steps"][0]["output"]
    assert output["mode"] == "best_effort" and "warning" not in output
    assert_pr_opened(fake, output, branch="feature/greet")


async def test_disabled_makes_no_request_at_all(github_stack: StackFactory) -> None:
    stack, fake = await github_stack(github_mode="disabled")
    fake.fail(500, times=5)  # GitHub "down" too: it is never asked
    mission, results, _ = await run_pr(stack)
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["output"] == {"pr": None, "mode": "disabled"}
    assert fake.received == []
    assert results[0]["tool_calls"] == []
    # the input's mode wins over the setting
    mission, _, _ = await run_pr(stack, mode="disabled")
    assert mission["steps"][0]["output"]["pr"] is None and fake.received == []


# --- GitHub down: fail_fast -----------------------------------------------------------------------


async def test_fail_fast_500_is_retried_and_the_retry_reuses_the_branch(github_stack: StackFactory) -> None:
    stack, fake = await github_stack(github_mode="fail_fast")
    fake.fail(500, match="POST /pulls")  # the branch is made, the pull request fails
    mission, results, _ = await run_pr(stack)
    assert mission["status"] == "succeeded", mission
    first, second = results
    assert (first["success"], first["error"]["type"]) == (False, "GITHUB_FAILED")
    assert "500" in first["error"]["message"] and first["error"].get("retryable") is not False
    assert first["tool_calls"][-1]["name"] == "github.create_pull" and first["tool_calls"][-1]["status"] == "error"
    assert second["success"] is True
    assert_pr_opened(fake, mission["steps"][0]["output"])
    assert await metric(stack, "coo_github_failures_total", mode="fail_fast", status="500") == 1


async def test_fail_fast_500_every_time_fails_the_step_after_its_attempts(
    github_stack: StackFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    stack, fake = await github_stack()
    fake.fail(500, times=10)
    mission, results, _ = await run_pr(stack, mode="fail_fast", max_attempts=2)
    assert mission["status"] == "failed", mission
    (step,) = mission["steps"]
    assert (step["status"], step["attempt"], step["error"]["type"]) == ("failed", 2, "GITHUB_FAILED")
    assert [(r["attempt"], r["error"]["type"]) for r in results] == [(1, "GITHUB_FAILED"), (2, "GITHUB_FAILED")]
    assert writes(fake) == []
    await assert_token_nowhere(stack, capfd)


async def test_fail_fast_401_is_not_retried(github_stack: StackFactory, capfd: pytest.CaptureFixture[str]) -> None:
    stack, fake = await github_stack(github_mode="fail_fast")
    fake.fail(401)
    mission, results, _ = await run_pr(stack)
    assert mission["status"] == "failed", mission
    (step,) = mission["steps"]
    assert (step["attempt"], step["error"]["type"]) == (1, "GITHUB_FAILED")
    (result,) = results
    assert "401" in result["error"]["message"] and "Bad credentials" in result["error"]["message"]
    assert result["error"]["retryable"] is False
    assert len(fake.received) == 1
    assert await metric(stack, "coo_github_failures_total", mode="fail_fast", status="401") == 1
    await assert_token_nowhere(stack, capfd)


async def test_fail_fast_timeout_is_retried(github_stack: StackFactory) -> None:
    stack, fake = await github_stack(github_mode="fail_fast")
    fake.hang(30)
    mission, results, _ = await run_pr(stack, timeout_s=2.5)
    assert mission["status"] == "succeeded", mission
    first, second = results
    assert (first["error"]["type"], first["tool_calls"][0]["status"]) == ("GITHUB_FAILED", "timeout")
    assert "in time" in first["error"]["message"]
    assert second["success"] is True
    assert_pr_opened(fake, mission["steps"][0]["output"])


async def test_fail_fast_429_waits_for_retry_after(github_stack: StackFactory) -> None:
    stack, fake = await github_stack(github_mode="fail_fast")
    fake.fail(429, retry_after_s=1, match="POST /pulls")
    mission, results, timeline = await run_pr(stack)
    assert mission["status"] == "succeeded", mission
    first, _ = results
    assert first["error"]["type"] == "GITHUB_FAILED" and first["error"]["retry_after_s"] == 1
    waits = [e["data"] for e in timeline if e["type"] == "step.retry_wait"]
    assert len(waits) == 1 and waits[0]["retry_in_s"] >= 1


async def test_a_missing_token_is_a_failure_that_names_the_setting(github_stack: StackFactory) -> None:
    stack, fake = await github_stack(github_token=None)
    mission, results, _ = await run_pr(stack, mode="fail_fast")
    assert mission["status"] == "failed" and len(results) == 1
    assert "COO_GITHUB_TOKEN" in results[0]["error"]["message"] and results[0]["error"]["retryable"] is False
    mission, _, timeline = await run_pr(stack)  # best_effort
    assert mission["status"] == "succeeded"
    assert "COO_GITHUB_TOKEN" in mission["steps"][0]["output"]["warning"]
    assert [e["data"]["status"] for e in timeline if e["type"] == "github.failed"] == ["401"]
    assert fake.received == []


# --- GitHub down: best_effort ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [("500", "500"), ("401", "401"), ("hang", "timeout")],
)
async def test_best_effort_succeeds_without_a_pull_request(
    github_stack: StackFactory, capfd: pytest.CaptureFixture[str], fault: str, status: str
) -> None:
    stack, fake = await github_stack()
    if fault == "hang":
        fake.hang(30)
    else:
        fake.fail(int(fault), times=5)
    mission, results, timeline = await run_pr(stack, timeout_s=2.5)
    assert mission["status"] == "succeeded", mission
    (step,) = mission["steps"]
    assert step["attempt"] == 1
    output = step["output"]
    assert output["pr"] is None and output["mode"] == "best_effort" and output["warning"]
    (event,) = [e["data"] for e in timeline if e["type"] == "github.failed"]
    assert (event["status"], event["message"], event["mode"]) == (status, output["warning"], "best_effort")
    assert await metric(stack, "coo_github_failures_total", mode="best_effort", status=status) == 1
    (result,) = results
    assert result["success"] is True and "no pull request" in result["stderr"]
    assert writes(fake) == [] and fake.repos[REPO].pulls == []
    await assert_token_nowhere(stack, capfd)


# --- a diff that does not apply ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fail_fast", "best_effort"])
async def test_a_diff_that_does_not_apply_fails_validation_before_any_write(
    github_stack: StackFactory, mode: str
) -> None:
    stack, fake = await github_stack()
    mission, results, _ = await run_pr(stack, diff=BAD_DIFF, mode=mode)
    assert mission["status"] == "failed", mission
    (result,) = results  # VALIDATION is not retried
    assert result["error"]["type"] == "VALIDATION"
    assert "app.py hunk 1" in result["error"]["message"] and "@@ -3,7 +3,8 @@" in result["error"]["message"]
    assert writes(fake) == [] and fake.received, "read, never written"


async def test_bad_input_names_the_field(github_stack: StackFactory) -> None:
    stack, fake = await github_stack()
    mission, results, _ = await run_pr(stack, github_repo="not a repo")
    assert mission["status"] == "failed"
    assert results[0]["error"]["type"] == "VALIDATION" and "input.github_repo" in results[0]["error"]["message"]
    assert fake.received == []
