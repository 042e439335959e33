"""Run one command: its own session and process group, a scrubbed environment, rlimits, a wall
clock, per-stream output caps, and a workspace it cannot leave through its cwd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from services.common.errors import CooError, ErrorType

BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 60
    memory_bytes: int = 1024 * 1024 * 1024
    file_size_bytes: int = 256 * 1024 * 1024
    processes: int = 256
    open_files: int = 256


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
    status: str  # succeeded | failed | timeout
    exit_code: int | None
    stdout: Capture
    stderr: Capture
    duration_ms: int
    isolation: list[str]


def resolve_inside(workspace: Path, relative: str) -> Path:
    """``relative`` resolved inside ``workspace`` (symlinks followed), or a VALIDATION error."""
    root = workspace.resolve()
    target = (root / relative).resolve()
    if target != root and not target.is_relative_to(root):
        raise CooError(ErrorType.VALIDATION, f"cwd '{relative}' leaves the workspace")
    return target


def _limit_child(limits: Limits) -> None:
    """Runs in the child between fork and exec: rlimits (the session is set by start_new_session)."""
    for which, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))


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
) -> Execution:
    limits = limits or Limits(cpu_s=max(1, int(timeout_s) + 1))
    workdir = resolve_inside(workspace, cwd)
    workdir.mkdir(parents=True, exist_ok=True)
    child_env = {**BASE_ENV, "HOME": str(workspace), "TMPDIR": str(workspace), **(env or {})}
    isolation = [
        "own session and process group",
        "scrubbed environment",
        "rlimits: cpu, memory, file size, processes",
    ]
    if os.geteuid() == 0:
        isolation.append("weaker: runs as root, so the process-count limit is not enforced by the kernel")
    program = ["/bin/sh", "-c", argv[0], "sh", *argv[1:]] if shell else argv
    out, err = Capture(output_cap), Capture(output_cap)
    start = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *program,
            cwd=workdir,
            env=child_env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _limit_child(limits),
        )
    except FileNotFoundError:
        err.feed(f"command not found: {program[0]}\n".encode())
        return Execution("failed", 127, out, err, int((time.perf_counter() - start) * 1000), isolation)
    except PermissionError as exc:
        err.feed(f"permission denied: {exc}\n".encode())
        return Execution("failed", 126, out, err, int((time.perf_counter() - start) * 1000), isolation)

    async def feed_stdin() -> None:
        if proc.stdin is None or stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()

    pumps = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), feed_stdin())
    status = "succeeded"
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
            await pumps
    except TimeoutError:
        status = "timeout"
    finally:
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
    if status != "timeout" and proc.returncode != 0:
        status = "failed"
    duration_ms = int((time.perf_counter() - start) * 1000)
    exit_code = proc.returncode if status != "timeout" else None
    return Execution(status, exit_code, out, err, duration_ms, isolation)
