"""The kept scanners in the jail: detect-secrets and bandit, from uv.lock, run inside bubblewrap (as
the workspace's own unprivileged user when the sandbox is root) through the Python environment the
sandbox shows read-only; and the offline security-scanner maps what they print to its findings."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.sandbox.executor import Execution, execute
from services.sandbox.isolation import new_uid
from services.sandbox.jail import Jail, probe_jail, python_environment, tools_bin
from services.sandbox.workspaces import chown_tree
from services.worker.agents import builtin  # noqa: F401  (registers the scripts)
from services.worker.llm.base import ChatRequest, Message, TextBlock, ToolResult
from services.worker.llm.offline import OfflineProvider

MIB = 1024 * 1024
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repos" / "sample-app"
# FAKE values, planted here only: a detector only detect-secrets has, and a private key.
GITHUB_TOKEN = "ghp_" + "Z1x2C3v4B5n6M7a8S9d0F1g2H3j4K5l6Q7w8"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfakefakefakefake\n-----END RSA PRIVATE KEY-----\n"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)")


@pytest.fixture(scope="module")
def jail() -> Jail:
    """The jail as the sandbox service makes it: with its Python environment shown read-only."""
    return probe_jail(tmp_bytes=64 * MIB, exposed=python_environment())


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, int | None]:
    path = tmp_path / "workspace"
    shutil.copytree(SAMPLE, path)
    (path / "deploy").mkdir()
    (path / "deploy" / "notes.txt").write_text(f"ci token: {GITHUB_TOKEN}\n")
    (path / "deploy" / "server.pem").write_text(PRIVATE_KEY)
    uid = new_uid() if os.geteuid() == 0 else None
    if uid is not None:
        chown_tree(path, uid)
    return path, uid


async def jailed(jail: Jail, workspace: tuple[Path, int | None], argv: list[str]) -> Execution:
    path, uid = workspace
    return await execute(argv, workspace=path, timeout_s=120, output_cap=MIB, jail=jail, uid=uid)


async def run_agent(
    agent: str, agent_input: dict[str, Any], jail: Jail, workspace: tuple[Path, int | None]
) -> tuple[dict[str, Any], list[Execution]]:
    """The runner's loop with the offline model, each ``run_command`` run in the jail and handed
    back as the tool formats it (services/worker/tools.py); returns (output, the commands' runs)."""
    provider = OfflineProvider()
    messages = [Message(role="user", content=(TextBlock(text=orjson.dumps(agent_input).decode()),))]
    runs: list[Execution] = []
    for _ in range(6):
        request = ChatRequest(agent=agent, model="offline", system="", messages=tuple(messages), tools=())
        response = await provider.chat(request)
        messages.append(Message(role="assistant", content=response.content))
        if not response.tool_uses:
            return orjson.loads(response.text), runs
        results = []
        for use in response.tool_uses:
            assert use.name == "run_command"
            run = await jailed(jail, workspace, use.input["argv"])
            runs.append(run)
            text = f"exit_code: {run.exit_code}\nstdout:\n{run.stdout.text()}"
            text += f"\nstderr:\n{run.stderr.text()}" if run.stderr.text() else ""
            results.append(ToolResult(use.id, text, is_error=run.exit_code != 0))
        messages.append(Message(role="user", content=tuple(results)))
    raise AssertionError("the agent did not finish")


async def test_the_locked_scanners_run_in_the_jail_read_only(jail: Jail, workspace: tuple[Path, int | None]) -> None:
    bin_dir = tools_bin()
    assert bin_dir is not None, "the tests run from the project's virtual environment"
    script = (
        "command -v detect-secrets; command -v bandit; detect-secrets --version; bandit --version;"
        " touch $0/owned; id -u"
    )
    result = await jailed(jail, workspace, ["sh", "-c", script, bin_dir])
    out, err = result.stdout.text(), result.stderr.text()
    assert out.splitlines()[:3] == [f"{bin_dir}/detect-secrets", f"{bin_dir}/bandit", version("bc-detect-secrets")]
    assert f"bandit {version('bandit')}" in out
    assert f"'{bin_dir}/owned': Read-only file system" in err  # shown, never writable
    if workspace[1] is not None:
        assert out.split()[-1] == str(workspace[1])  # as the workspace's own unprivileged user
    assert any(
        note.startswith("filesystem: also read-only, the sandbox's Python environment") for note in result.isolation
    )


async def test_the_security_scanner_reports_what_detect_secrets_and_bandit_found(
    jail: Jail, workspace: tuple[Path, int | None]
) -> None:
    output, runs = await run_agent("security-scanner", {"repo": str(SAMPLE)}, jail, workspace)
    assert "errors" not in output, output["errors"]
    assert all(run.exit_code in (0, 1) for run in runs), [run.stderr.text() for run in runs]
    found = {(f["file"], f["line"], f["rule"], f["severity"]) for f in output["findings"]}
    assert {
        # detect-secrets, under the name the patcher knows
        ("app/config.py", 4, "aws-access-key-id", "high"),
        # detect-secrets, its own type as the rule
        ("deploy/notes.txt", 1, "github-token", "high"),
        # grep, for what detect-secrets does not name as the patcher needs (and the fixed -e: a
        # pattern starting with a dash)
        ("deploy/server.pem", 1, "private-key", "high"),
        ("app/config.py", 5, "anthropic-api-key", "high"),
        ("app/config.py", 9, "hardcoded-password", "medium"),
        # bandit: test id and name
        ("app/server.py", 3, "B404-import-subprocess", "low"),
        ("app/server.py", 12, "B501-request-with-no-cert-validation", "high"),
        ("app/server.py", 16, "B602-subprocess-popen-with-shell-equals-true", "high"),
        ("app/server.py", 21, "B307-eval", "medium"),
    } <= found
    # A secret the patcher knows is reported once, under its rule (not again as detect-secrets'
    # keyword or bandit's hard-coded password).
    lines = [(f["file"], f["line"]) for f in output["findings"]]
    assert lines.count(("app/config.py", 9)) == 1 and ("app/config.py", 5, "secret-keyword", "medium") not in found
    summary = output["summary"]
    assert summary["total"] == len(output["findings"]) == summary["high"] + summary["medium"] + summary["low"]
    snippets = {(f["file"], f["line"]): f["snippet"] for f in output["findings"]}
    assert snippets[("app/server.py", 16)].startswith("return subprocess.run(")
    assert snippets[("deploy/notes.txt", 1)] == "ci token: [REDACTED]"
    assert snippets[("app/config.py", 4)].startswith("AWS_ACCESS_KEY_ID = ")
    text = orjson.dumps(output).decode()
    for secret in ("AKIAQ7EXAMPLEFAKE123", "sk-ant-api03", "hunter2", GITHUB_TOKEN):
        assert secret not in text
    # What the commands printed holds no secret either (it is stored with the step's tool calls).
    printed = " ".join(run.stdout.text() for run in runs if "REDACTED" in run.stdout.text() or "," in run.stdout.text())
    assert GITHUB_TOKEN not in printed and "AKIAQ7EXAMPLEFAKE123" not in printed


async def test_the_code_reviewers_greps_run_cleanly(jail: Jail, workspace: tuple[Path, int | None]) -> None:
    output, runs = await run_agent("code-reviewer", {"repo": str(SAMPLE), "findings_total": 1}, jail, workspace)
    assert [run.exit_code for run in runs] == [0, 0, 0] and not any(run.stderr.text() for run in runs)
    kinds = {(c["file"], c["kind"]) for c in output["comments"]}
    assert {("app/server.py", "todo"), ("app/server.py", "bare-except"), ("app/server.py", "print-debugging")} <= kinds
