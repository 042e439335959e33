"""The offline scripts of the repository agents, driven through the same tool loop as a model, with
their commands really run on a copy of the sample repository (as the sandbox would)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.worker.agents import builtin  # noqa: F401  (registers the scripts)
from services.worker.llm.base import ChatRequest, Message, TextBlock, ToolResult
from services.worker.llm.offline import OfflineProvider

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repos" / "sample-app"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    copy = tmp_path / "workspace"
    shutil.copytree(SAMPLE, copy)
    return copy


async def run_command(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command and format its result as ``run_command`` hands it to the model (services/worker/tools.py)."""
    # The sandbox puts the environment's own tools (detect-secrets, bandit) after the system's.
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PATH": path}
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    code = proc.returncode if proc.returncode is not None else -1
    text = f"exit_code: {code}\nstdout:\n{out.decode()}"
    return code, text + (f"\nstderr:\n{err.decode()}" if err else "")


async def run_agent(agent: str, agent_input: dict[str, Any], workspace: Path) -> tuple[dict[str, Any], list[dict]]:
    """The runner's loop, with tools run locally in ``workspace``; returns (output, tool calls)."""
    provider = OfflineProvider()
    messages = [Message(role="user", content=(TextBlock(text=orjson.dumps(agent_input).decode()),))]
    calls: list[dict[str, Any]] = []
    for _ in range(6):
        response = await provider.chat(
            ChatRequest(agent=agent, model="offline", system="", messages=tuple(messages), tools=())
        )
        messages.append(Message(role="assistant", content=response.content))
        if not response.tool_uses:
            return orjson.loads(response.text), calls
        results = []
        for use in response.tool_uses:
            calls.append({"name": use.name, "input": use.input})
            if use.name == "run_command":
                code, text = await run_command(use.input["argv"], workspace)
                results.append(ToolResult(use.id, text, is_error=code != 0))
            else:
                results.append(ToolResult(use.id, "posted to Slack (ok)"))
        messages.append(Message(role="user", content=tuple(results)))
    raise AssertionError("the agent did not finish")


async def test_security_scanner_finds_the_planted_secrets_and_risky_patterns(workspace: Path) -> None:
    output, calls = await run_agent("security-scanner", {"repo": str(SAMPLE)}, workspace)
    assert {"detect-secrets", "bandit"} <= {c["input"]["argv"][0] for c in calls}
    assert "errors" not in output, output.get("errors")
    found = {(f["file"], f["line"], f["rule"], f["severity"]) for f in output["findings"]}
    assert {
        ("app/config.py", 4, "aws-access-key-id", "high"),  # detect-secrets
        ("app/config.py", 5, "anthropic-api-key", "high"),  # grep: detect-secrets has no Anthropic detector
        ("app/config.py", 9, "hardcoded-password", "medium"),
        ("app/server.py", 12, "B501-request-with-no-cert-validation", "high"),  # bandit
        ("app/server.py", 16, "B602-subprocess-popen-with-shell-equals-true", "high"),
        ("app/server.py", 21, "B307-eval", "medium"),
    } <= found
    summary = output["summary"]
    assert summary["total"] == len(output["findings"]) == summary["high"] + summary["medium"] + summary["low"]
    assert summary["high"] >= 2
    # Snippets never carry the secrets themselves.
    text = orjson.dumps(output).decode()
    assert "AKIAQ7EXAMPLEFAKE123" not in text and "sk-ant-api03" not in text and "hunter2" not in text


async def test_patcher_replaces_the_secrets_and_reports_a_unified_diff(workspace: Path) -> None:
    """On its first iteration the offline patcher takes out only the high findings (so that the
    repo-health check fails and the loop runs): the second, told so, takes out the rest."""
    scan, _ = await run_agent("security-scanner", {"repo": str(SAMPLE)}, workspace)
    output, calls = await run_agent("patcher", {"repo": str(SAMPLE), "findings": scan["findings"]}, workspace)
    assert [c["input"]["argv"][:2] for c in calls] == [["sh", "-c"]]
    assert output["files"] == ["app/config.py"] and output["files_changed"] == 1
    assert output["patch"].startswith("--- a/app/config.py\n+++ b/app/config.py\n")
    assert '+AWS_ACCESS_KEY_ID = "<set from environment: AWS_ACCESS_KEY_ID>"' in output["patch"]
    assert '+ANTHROPIC_API_KEY = "<set from environment: ANTHROPIC_API_KEY>"' in output["patch"]
    assert "+password" not in output["patch"], "the first iteration leaves the medium finding"
    patched = (workspace / "app" / "config.py").read_text()
    assert "AKIA" not in patched and "sk-ant-" not in patched and "hunter2" in patched
    assert 'AWS_REGION = "eu-west-1"' in patched  # the rest is untouched
    rescan, _ = await run_agent("security-scanner", {"repo": str(SAMPLE)}, workspace)
    assert not [f for f in rescan["findings"] if f["rule"] in ("aws-access-key-id", "anthropic-api-key")]


async def test_compliance_checker_flags_the_missing_license_and_the_secrets(workspace: Path) -> None:
    output, _ = await run_agent("compliance-checker", {"repo": str(SAMPLE), "secrets_found": 3}, workspace)
    checks = {c["name"]: c["passed"] for c in output["checks"]}
    assert checks == {"license-present": False, "readme-present": True, "gitignore-present": True, "no-secrets": False}
    assert output["passed"] is False


async def test_code_reviewer_comments_on_todo_bare_except_and_print(workspace: Path) -> None:
    output, _ = await run_agent("code-reviewer", {"repo": str(SAMPLE), "findings_total": 6}, workspace)
    kinds = {(c["file"], c["kind"]) for c in output["comments"]}
    assert {("app/server.py", "todo"), ("app/server.py", "bare-except"), ("app/server.py", "print-debugging")} <= kinds
    assert output["summary"] == {"comments": len(output["comments"]), "verdict": "changes_requested"}


async def test_notifier_posts_a_summary_to_slack(workspace: Path) -> None:
    summary = {"total": 7, "high": 2, "medium": 4, "low": 1}
    output, calls = await run_agent(
        "notifier", {"repo": "sample-app", "summary": summary, "patch_files": 1, "compliance_passed": False}, workspace
    )
    (call,) = calls
    assert call["name"] == "post_slack"
    assert "security findings: 7 (2 high, 4 medium, 1 low)" in call["input"]["text"]
    assert "compliance: failed" in call["input"]["text"]
    assert output["posted"] is True


async def test_a_repository_agent_without_a_repo_says_what_is_missing(workspace: Path) -> None:
    output, calls = await run_agent("security-scanner", {}, workspace)
    assert calls == [] and "input.repo" in output["error"]
