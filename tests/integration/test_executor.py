"""The sandbox executor: output, exit codes, stdin, timeouts, caps, environment, cwd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.errors import CooError, ErrorType
from services.sandbox.executor import execute
from services.sandbox.isolation import HostSupport, new_uid, probe
from services.sandbox.workspaces import chown_tree

MIB = 1024 * 1024


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        pause.wait(0.02)
    return True


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_output_is_captured(tmp_path: Path) -> None:
    result = await execute(["echo", "hello world"], workspace=tmp_path, timeout_s=10, output_cap=MIB)
    assert result.status == "succeeded"
    assert result.exit_code == 0
    assert result.stdout.text() == "hello world\n"
    assert result.stderr.text() == ""
    assert not result.stdout.truncated
    assert result.duration_ms >= 0


async def test_stderr_is_captured_separately(tmp_path: Path) -> None:
    result = await execute(["echo out; echo err >&2"], workspace=tmp_path, timeout_s=10, output_cap=MIB, shell=True)
    assert result.stdout.text() == "out\n"
    assert result.stderr.text() == "err\n"


async def test_shell_arguments_are_passed_as_positional_parameters(tmp_path: Path) -> None:
    result = await execute(
        ['printf "%s|" "$1" "$2"', "a b", "$HOME"], workspace=tmp_path, timeout_s=10, output_cap=MIB, shell=True
    )
    assert result.stdout.text() == "a b|$HOME|"


async def test_non_zero_exit_is_failed(tmp_path: Path) -> None:
    result = await execute(["sh", "-c", "echo bad >&2; exit 3"], workspace=tmp_path, timeout_s=10, output_cap=MIB)
    assert result.status == "failed"
    assert result.exit_code == 3
    assert result.stderr.text() == "bad\n"


async def test_stdin_is_passed(tmp_path: Path) -> None:
    result = await execute(["cat"], workspace=tmp_path, stdin="line one\nline two\n", timeout_s=10, output_cap=MIB)
    assert result.status == "succeeded"
    assert result.stdout.text() == "line one\nline two\n"


async def test_without_stdin_the_child_reads_end_of_file(tmp_path: Path) -> None:
    result = await execute(["cat"], workspace=tmp_path, timeout_s=10, output_cap=MIB)
    assert result.status == "succeeded"
    assert result.stdout.text() == ""


async def test_timeout_kills_the_command_and_what_it_left_behind(tmp_path: Path) -> None:
    started = time.monotonic()
    task = asyncio.create_task(
        execute(
            ["sleep 100 & echo $! > bg.pid; sleep 100"],
            workspace=tmp_path,
            timeout_s=1.0,
            output_cap=MIB,
            shell=True,
        )
    )
    pid_file = tmp_path / "bg.pid"
    deadline = time.monotonic() + 5
    while not (pid_file.exists() and pid_file.read_text().strip()) and not task.done():
        assert time.monotonic() < deadline, "the background child never wrote its pid"
        await asyncio.wait([task], timeout=0.02)
    result = await task
    assert time.monotonic() - started < 8
    assert result.status == "timeout"
    assert result.exit_code is None
    background = int(pid_file.read_text())
    assert wait_until(lambda: not alive(background)), f"background child {background} survived the timeout"


async def test_background_child_of_a_finished_command_is_killed(tmp_path: Path) -> None:
    result = await execute(
        ["sleep 100 >/dev/null 2>&1 & echo $! > bg.pid"], workspace=tmp_path, timeout_s=10, output_cap=MIB, shell=True
    )
    assert result.status == "succeeded"
    background = int((tmp_path / "bg.pid").read_text())
    assert wait_until(lambda: not alive(background)), f"background child {background} survived"


async def test_output_beyond_the_cap_is_truncated_not_lost_silently(tmp_path: Path) -> None:
    five_mib = str(5 * MIB)
    result = await execute(["head", "-c", five_mib, "/dev/zero"], workspace=tmp_path, timeout_s=20, output_cap=MIB)
    assert result.status == "succeeded"
    assert result.stdout.truncated is True
    assert len(result.stdout.data) == MIB
    assert result.stdout.dropped == 4 * MIB
    assert result.stderr.truncated is False


async def test_output_exactly_at_the_cap_is_not_truncated(tmp_path: Path) -> None:
    result = await execute(["head", "-c", str(MIB), "/dev/zero"], workspace=tmp_path, timeout_s=20, output_cap=MIB)
    assert len(result.stdout.data) == MIB
    assert result.stdout.truncated is False


async def test_parent_environment_is_not_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_SECRET_CANARY", "x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary")
    result = await execute(["env"], workspace=tmp_path, timeout_s=10, output_cap=MIB)
    assert result.status == "succeeded"
    assert "COO_SECRET_CANARY" not in result.stdout.text()
    assert "sk-ant-canary" not in result.stdout.text()
    assert f"HOME={tmp_path}" in result.stdout.text().splitlines()


async def test_requested_environment_is_visible(tmp_path: Path) -> None:
    result = await execute(
        ["sh", "-c", 'echo "$GREETING"'], workspace=tmp_path, env={"GREETING": "hi"}, timeout_s=10, output_cap=MIB
    )
    assert result.stdout.text() == "hi\n"


async def test_command_runs_in_the_requested_cwd(tmp_path: Path) -> None:
    result = await execute(["pwd"], workspace=tmp_path, cwd="sub/dir", timeout_s=10, output_cap=MIB)
    assert result.stdout.text().strip() == str((tmp_path / "sub" / "dir").resolve())


@pytest.mark.parametrize("cwd", ["..", "../", "../elsewhere", "sub/../../x", "/etc", "/"])
async def test_cwd_outside_the_workspace_is_rejected(tmp_path: Path, cwd: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with pytest.raises(CooError) as info:
        await execute(["touch", "ran"], workspace=workspace, cwd=cwd, timeout_s=10, output_cap=MIB)
    assert info.value.error_type is ErrorType.VALIDATION
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "elsewhere").exists()


async def test_cwd_through_a_symlink_pointing_outside_is_rejected(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    with pytest.raises(CooError) as info:
        await execute(["touch", "ran"], workspace=workspace, cwd="link", timeout_s=10, output_cap=MIB)
    assert info.value.error_type is ErrorType.VALIDATION
    assert not (outside / "ran").exists()


async def test_cwd_through_a_symlink_staying_inside_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = await execute(["pwd"], workspace=tmp_path, cwd="link", timeout_s=10, output_cap=MIB)
    assert result.status == "succeeded"
    assert result.stdout.text().strip() == str((tmp_path / "real").resolve())


async def test_command_not_found_exits_127(tmp_path: Path) -> None:
    result = await execute(["coo-no-such-command-xyz"], workspace=tmp_path, timeout_s=10, output_cap=MIB)
    assert result.status == "failed"
    assert result.exit_code == 127
    assert "coo-no-such-command-xyz" in result.stderr.text()


async def test_command_not_found_in_a_shell_exits_127(tmp_path: Path) -> None:
    result = await execute(["coo-no-such-command-xyz"], workspace=tmp_path, timeout_s=10, output_cap=MIB, shell=True)
    assert result.status == "failed"
    assert result.exit_code == 127


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid")
async def test_timeout_is_enforced_even_when_a_child_leaves_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    task = asyncio.create_task(
        execute(
            ["setsid sleep 30 & echo $! > escaped.pid; sleep 100"],
            workspace=tmp_path,
            timeout_s=0.3,
            output_cap=MIB,
            shell=True,
        )
    )
    # the wall clock plus the executor's 2 s grace for draining output, plus slack
    done, _ = await asyncio.wait([task], timeout=3.5)
    if pid_file.exists() and pid_file.read_text().strip():  # let a stuck execute finish
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    result = await task
    assert result.status == "timeout"
    assert task in done, "execute overran its wall clock"


# --- isolation --------------------------------------------------------------------------------

NO_SUPPORT = HostSupport.none("not on this host (test)")


async def test_network_off_without_a_namespace_says_so_instead_of_pretending(tmp_path: Path) -> None:
    result = await execute(
        ["true"], workspace=tmp_path, timeout_s=10, output_cap=MIB, network=False, support=NO_SUPPORT
    )
    assert result.status == "succeeded"
    weaker = [note for note in result.isolation if note.startswith("weaker: network NOT isolated")]
    assert weaker and "not on this host (test)" in weaker[0]


@pytest.fixture(scope="module")
def host_support() -> HostSupport:
    support = probe()
    if support.network_namespace is not None or support.user_switch is not None:
        pytest.skip(f"this host cannot isolate commands: {support}")
    return support


def interfaces(text: str) -> list[str]:
    return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:])


async def test_network_off_runs_in_a_private_namespace_with_loopback_only(
    tmp_path: Path, host_support: HostSupport
) -> None:
    result = await execute(
        ["cat", "/proc/net/dev"], workspace=tmp_path, timeout_s=10, output_cap=MIB, network=False, support=host_support
    )
    assert interfaces(result.stdout.text()) == ["lo"]
    assert "network: private network namespace (loopback only, nothing of the host reachable)" in result.isolation
    with_network = await execute(
        ["cat", "/proc/net/dev"], workspace=tmp_path, timeout_s=10, output_cap=MIB, network=True, support=host_support
    )
    assert with_network.stdout.text() != result.stdout.text()  # the host's interfaces and counters


async def test_a_command_runs_as_its_workspace_user(tmp_path: Path, host_support: HostSupport) -> None:
    uid = new_uid()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    chown_tree(workspace, uid)
    os.chmod(tmp_path, 0o755)
    result = await execute(
        ["sh", "-c", "id -u; id -G; touch made"],
        workspace=workspace,
        cwd="new/dir",
        timeout_s=10,
        output_cap=MIB,
        support=host_support,
        uid=uid,
    )
    assert result.status == "succeeded", result.stderr.text()
    assert result.stdout.text().split() == [str(uid), str(uid)]  # no supplementary groups
    assert (workspace / "new" / "dir" / "made").stat().st_uid == uid
    assert (workspace / "new").stat().st_uid == uid  # the cwd it asked for was made for it


async def test_a_write_past_the_file_size_limit_is_stopped(tmp_path: Path) -> None:
    result = await execute(
        ["head -c 3000000 /dev/zero > big"],
        workspace=tmp_path,
        timeout_s=10,
        output_cap=MIB,
        shell=True,
        workspace_cap=2 * MIB,
    )
    assert result.status == "failed" and result.stopped_by == "file_size"
    assert (tmp_path / "big").stat().st_size <= 2 * MIB


async def test_a_full_workspace_refuses_the_next_command(tmp_path: Path) -> None:
    (tmp_path / "filler").write_bytes(os.urandom(2 * MIB))
    result = await execute(["touch", "x"], workspace=tmp_path, timeout_s=10, output_cap=MIB, workspace_cap=MIB)
    assert result.status == "failed" and result.stopped_by == "workspace_cap"
    assert "the workspace is full" in result.stderr.text()
    assert not (tmp_path / "x").exists()
