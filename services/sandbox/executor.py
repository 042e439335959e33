"""Run one command: its own session and process group, a scrubbed environment, rlimits, a wall
clock, per-stream output caps, and a workspace it cannot leave through its cwd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from services.common.errors import CooError, ErrorType
from services.common.status import RunStatus
from services.sandbox.isolation import HostSupport, Limits, child_setup
from services.sandbox.jail import WORKSPACE, Jail, tools_bin
from services.sandbox.workspaces import disk_usage

__all__ = ["Capture", "Execution", "Limits", "execute", "resolve_inside"]

# The system's directories first, then the locked tools of COO's own virtual environment
# (detect-secrets, bandit: the sandbox service shows that environment read-only in the jail).
BASE_ENV = {
    "PATH": ":".join(["/usr/local/bin", "/usr/bin", "/bin", *filter(None, [tools_bin()])]),
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
WORKSPACE_POLL_S = 0.25
MIB = 1024 * 1024


@dataclass
class Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data.extend(chunk[:room])
        self.dropped += max(0, len(chunk) - max(room, 0))

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass
class Execution:
    status: RunStatus  # succeeded | failed | timeout
    exit_code: int | None
    stdout: Capture
    stderr: Capture
    duration_ms: int
    isolation: list[str]
    stopped_by: str | None = None  # timeout | workspace_cap | file_size | cpu


def resolve_inside(workspace: Path, relative: str) -> Path:
    """``relative`` resolved inside ``workspace`` (symlinks followed), or a VALIDATION error."""
    root = workspace.resolve()
    target = (root / relative).resolve()
    if target != root and not target.is_relative_to(root):
        raise CooError(ErrorType.VALIDATION, f"cwd '{relative}' leaves the workspace")
    return target


def _relative(workspace: Path, workdir: Path) -> str:
    """``workdir`` (already resolved inside ``workspace``) relative to it, as the jail sees it."""
    return workdir.relative_to(workspace.resolve()).as_posix()


def _make_workdir(root: Path, workdir: Path, uid: int | None) -> None:
    """Create ``workdir`` (inside ``root``); directories made here belong to the command's user."""
    root = root.resolve()
    missing = []
    directory = workdir
    while directory != root and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    workdir.mkdir(parents=True, exist_ok=True)
    if uid is not None:
        for made in missing:
            os.chown(made, uid, uid, follow_symlinks=False)


def _jail_notes(
    limits: Limits, *, uid: int | None, workspace_cap: int | None, egress: Sequence[str] | None
) -> list[str]:
    notes = [
        "jail: bubblewrap with new user, pid, mount, network, ipc, uts and cgroup namespaces; "
        "no capabilities, no nested user namespaces; only its own processes are visible",
        "filesystem: system directories read-only, own /proc, minimal /dev, own empty /tmp; "
        f"only the workspace ({WORKSPACE}) is writable; nothing else of the host is visible",
        "seccomp: ptrace, process_vm_*, mount, bpf, keyctl, kexec, modules, io_uring, namespaces refused",
        "environment: only PATH, LANG, LC_ALL, HOME, TMPDIR and the requested variables",
        f"rlimits: cpu {limits.cpu_s}s, address space {limits.memory_bytes // MIB} MiB, "
        f"file size {limits.file_size_bytes} bytes, processes {limits.processes}, open files {limits.open_files}",
        "processes: whatever the command leaves running is killed when it ends",
    ]
    if uid is not None:
        notes.append(f"user: unprivileged uid {uid}, owner of this workspace only")
    if egress is None:
        notes.append("network: none (loopback only)")
    elif egress:
        notes.append("network: egress only through the sandbox's proxy (HTTP_PROXY), to " + ", ".join(egress))
    else:
        notes.append("network: the request asked for egress, but nothing is allowed (COO_SANDBOX_EGRESS_ALLOW)")
    if workspace_cap is not None:
        notes.append(f"workspace: capped at {workspace_cap} bytes")
    return notes


def _isolation_notes(
    limits: Limits, *, network: bool, support: HostSupport | None, uid: int | None, workspace_cap: int | None
) -> list[str]:
    notes = [
        "weaker: COO_SANDBOX_ISOLATION=weak: no jail (the command sees the host's filesystem and processes)",
        "own session and process group; the whole process tree is killed when the command ends",
        "environment: only PATH, LANG, LC_ALL, HOME, TMPDIR and the requested variables",
        f"rlimits: cpu {limits.cpu_s}s, address space {limits.memory_bytes // MIB} MiB, "
        f"file size {limits.file_size_bytes} bytes, processes {limits.processes}, open files {limits.open_files}",
    ]
    if uid is not None:
        notes.append(f"user: unprivileged uid {uid}, owner of this workspace only")
    elif os.geteuid() == 0:
        reason = support.user_switch if support is not None else "user switching not requested"
        notes.append(f"weaker: runs as root ({reason}): the process-count limit is not enforced by the kernel")
    else:
        notes.append("weaker: runs as the sandbox's own user")
    if network:
        notes.append("network: the host's network (the request allows it)")
    elif support is not None and support.network_namespace is None:
        notes.append("network: private network namespace (loopback only, nothing of the host reachable)")
    else:
        reason = support.network_namespace if support is not None else "network isolation not probed"
        notes.append(f"weaker: network NOT isolated although the request asked for no network ({reason})")
    if workspace_cap is not None:
        notes.append(f"workspace: capped at {workspace_cap} bytes")
    return notes


async def _pump(stream: asyncio.StreamReader | None, capture: Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.feed(chunk)


def _kill_tree(pid: int) -> None:
    """Kill the command's process group and every descendant that left it (``setsid``)."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


async def _watch_workspace(workspace: Path, cap: int, over: asyncio.Event) -> None:
    """Set ``over`` once the workspace holds more than ``cap`` bytes (polled; single files are
    stopped at the cap by the kernel's file-size limit)."""
    while True:
        started = time.monotonic()
        if await asyncio.to_thread(disk_usage, workspace) > cap:
            over.set()
            return
        # a big tree is measured less often, so measuring never costs more than ~5% of a core
        await asyncio.sleep(max(WORKSPACE_POLL_S, 20 * (time.monotonic() - started)))


async def _until(event: asyncio.Event) -> None:
    await event.wait()


async def _until_finished(proc: asyncio.subprocess.Process, pumps: asyncio.Future[Any]) -> None:
    await asyncio.shield(proc.wait())
    await asyncio.shield(pumps)  # cancelling this waiter must not stop the reading


def _stopped_by(returncode: int | None) -> str | None:
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return "file_size"
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "cpu"
    return None


async def execute(
    argv: list[str],
    *,
    workspace: Path,
    cwd: str = ".",
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout_s: float,
    output_cap: int,
    limits: Limits | None = None,
    shell: bool = False,
    network: bool = True,
    support: HostSupport | None = None,
    uid: int | None = None,
    workspace_cap: int | None = None,
    jail: Jail | None = None,
    egress: Sequence[str] | None = None,
    egress_socket: Path | None = None,
) -> Execution:
    """Run ``argv`` in ``workspace``: in ``jail`` when given (``egress`` lists what its proxy at
    ``egress_socket`` lets it reach; ``None``: no network); else with the weaker isolation of
    ``COO_SANDBOX_ISOLATION=weak`` (with ``network=False`` a private network namespace when
    ``support`` says the host allows it). The returned ``isolation`` says what was really applied.
    ``uid`` runs it as that user; ``workspace_cap`` bounds the workspace's size."""
    limits = limits or Limits(cpu_s=max(1, int(timeout_s) + 1))
    workdir = resolve_inside(workspace, cwd)
    _make_workdir(workspace, workdir, uid)
    out, err = Capture(output_cap), Capture(output_cap)
    start = time.perf_counter()
    if workspace_cap is not None:
        room = workspace_cap - await asyncio.to_thread(disk_usage, workspace)
        if room <= 0:
            err.feed(f"[sandbox] the workspace is full (cap {workspace_cap} bytes)\n".encode())
            return Execution(RunStatus.FAILED, None, out, err, 0, [], stopped_by="workspace_cap")
        limits = replace(limits, file_size_bytes=min(limits.file_size_bytes, room))
    program = ["/bin/sh", "-c", argv[0], "sh", *argv[1:]] if shell else argv
    stdin_pipe = asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL
    try:
        if jail is not None:
            isolation = _jail_notes(limits, uid=uid, workspace_cap=workspace_cap, egress=egress)
            if jail.exposed:
                isolation.append(
                    "filesystem: also read-only, the sandbox's Python environment: " + ", ".join(jail.exposed)
                )
            relative = _relative(workspace, workdir)
            with jail.launch(
                program,
                workspace=workspace,
                workdir=relative,
                env={**BASE_ENV, **(env or {})},
                limits=limits,
                uid=uid,
                egress_socket=egress_socket if egress else None,
            ) as launch:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    env=launch.env,
                    pass_fds=launch.pass_fds,
                    stdin=stdin_pipe,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=launch.preexec,
                )
        else:
            isolation = _isolation_notes(limits, network=network, support=support, uid=uid, workspace_cap=workspace_cap)
            private_network = not network and support is not None and support.network_namespace is None
            child_env = {**BASE_ENV, "HOME": str(workspace), "TMPDIR": str(workspace), **(env or {})}
            proc = await asyncio.create_subprocess_exec(
                *program,
                cwd=workdir,
                env=child_env,
                stdin=stdin_pipe,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=child_setup(limits, private_network=private_network, uid=uid),
            )
    except FileNotFoundError:
        err.feed(f"command not found: {program[0]}\n".encode())
        return Execution(RunStatus.FAILED, 127, out, err, int((time.perf_counter() - start) * 1000), [])
    except PermissionError as exc:
        err.feed(f"permission denied: {exc}\n".encode())
        return Execution(RunStatus.FAILED, 126, out, err, int((time.perf_counter() - start) * 1000), [])
    except subprocess.SubprocessError as exc:
        # the isolation promised could not be applied in the child: the command did not run
        raise CooError(ErrorType.SANDBOX_FAILED, f"could not isolate the command ({exc})") from exc

    async def feed_stdin() -> None:
        if proc.stdin is None or stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()

    pumps = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), feed_stdin())
    over_cap = asyncio.Event()
    watcher = asyncio.create_task(_watch_workspace(workspace, workspace_cap, over_cap)) if workspace_cap else None
    stopped_by: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            cap_hit = asyncio.create_task(_until(over_cap))
            done = asyncio.create_task(_until_finished(proc, pumps))
            try:
                await asyncio.wait((done, cap_hit), return_when=asyncio.FIRST_COMPLETED)
                if done.done():
                    await done
                elif over_cap.is_set():
                    stopped_by = "workspace_cap"
            finally:
                cap_hit.cancel()
                done.cancel()
    except TimeoutError:
        stopped_by = "timeout"
    finally:
        if watcher is not None:
            watcher.cancel()
        _kill_tree(proc.pid)  # whatever it left behind goes too
        try:
            async with asyncio.timeout(2):
                await proc.wait()
                await pumps
        except TimeoutError:
            # Something outside our reach still holds a pipe open: stop reading and let go of it.
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()
    if stopped_by is None and workspace_cap is not None:
        if await asyncio.to_thread(disk_usage, workspace) > workspace_cap:
            stopped_by = "workspace_cap"
    if stopped_by == "workspace_cap":
        err.feed(f"\n[sandbox] stopped: the workspace grew past its cap of {workspace_cap} bytes\n".encode())
    stopped_by = stopped_by or _stopped_by(proc.returncode)
    returncode = proc.returncode
    if jail is not None and returncode == 1 and err.data.startswith(b"bwrap: execvp "):
        # bubblewrap could not start the program: say so as a shell would (127)
        err = Capture(output_cap)
        err.feed(f"command not found: {program[0]}\n".encode())
        returncode = 127
    if stopped_by == "timeout":
        status, exit_code = RunStatus.TIMEOUT, None
    else:
        status = RunStatus.SUCCEEDED if returncode == 0 and stopped_by is None else RunStatus.FAILED
        exit_code = returncode
    duration_ms = int((time.perf_counter() - start) * 1000)
    return Execution(status, exit_code, out, err, duration_ms, isolation, stopped_by)
