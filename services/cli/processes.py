"""Starting and stopping COO's services (and any other program) as child processes: one launcher
for `coo up`, the end-to-end tests and the benchmark.

Each child leads its own process group, gets SIGTERM when the process that started it dies, and
writes stdout and stderr to its log file; stopping signals the whole group, waits, then kills what
is left. ``wait_until_ready`` polls the services' ``/readyz`` and says why one is not ready."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.cli.embedded import die_with_parent

SERVICES = ("orchestrator", "worker", "sandbox")


def serve_argv(service: str) -> list[str]:
    """The command that runs one COO service with this interpreter (``coo serve <service>``)."""
    return [sys.executable, "-m", "services.cli.main", "serve", service]


def python_argv(*module_and_args: str) -> list[str]:
    return [sys.executable, "-m", *module_and_args]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def exit_reason(self, what: str | None = None) -> str | None:
        """``None`` while it runs; else that it exited, with its code and last log lines."""
        if self.alive():
            return None
        return f"{what or self.name} exited with code {self.proc.returncode}; last log lines:\n{self.tail(15)}"


class Children:
    """Child processes, each the leader of its own process group."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        **popen: Any,
    ) -> Child:
        """Start ``argv``; ``popen`` adds ``subprocess.Popen`` arguments (``user``, ``group``…)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd is not None else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
                **popen,
            )
        child = Child(name, proc, log, stop_signal)
        self._children.append(child)
        return child

    def serve(self, service: str, *, name: str | None = None, log: Path, env: Mapping[str, str], **popen: Any) -> Child:
        """Start ``coo serve <service>`` (as ``name``, for a second replica)."""
        return self.spawn(name or service, serve_argv(service), log=log, env=env, **popen)

    def stop(self, child: Child, timeout_s: float = 15.0) -> None:
        """Signal the child's process group, wait, then kill what is left (by group id)."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, child.stop_signal)
            try:
                child.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
        # grandchildren left in the group (e.g. a prefork pool) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        if child in self._children:
            self._children.remove(child)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """Stop every child: all are signalled first, then each is waited for."""
        children = list(reversed(self._children))
        for child in children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, child.stop_signal)
        give_up = time.monotonic() + timeout_s
        for child in children:
            self.stop(child, timeout_s=max(0.1, give_up - time.monotonic()))


def wait_until_ready(
    urls: Mapping[str, str],
    exited: Callable[[str], str | None],
    *,
    deadline_s: float,
    check_interrupted: Callable[[], None] = lambda: None,
) -> None:
    """Poll each service's ``/readyz`` URL until all answer 200. ``exited(service)`` returns why a
    service died (then this raises with it); ``check_interrupted`` may raise to stop waiting."""
    give_up = time.monotonic() + deadline_s
    pending = set(urls)
    last: dict[str, str] = {}  # what each pending service's /readyz said last
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for service in sorted(pending):
                reason = exited(service)
                if reason is not None:
                    raise RuntimeError(reason)
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = client.get(urls[service])
                    if answer.status_code == 200:
                        pending.discard(service)
                        continue
                    checks = answer.json().get("checks", {})
                    down = {name: state for name, state in checks.items() if state != "ok"}
                    last[service] = "; ".join(f"{name} {state}" for name, state in sorted(down.items()))
                    if "isolation" in down and "not probed yet" not in down["isolation"]:
                        # not transient: the host cannot jail commands
                        raise RuntimeError(f"the {service} is not ready: isolation {down['isolation']}")
            check_interrupted()
            if pending and time.monotonic() > give_up:
                said = "".join(f"\n  {service}: {last[service]}" for service in sorted(pending) if last.get(service))
                raise RuntimeError(f"not ready after {deadline_s:g}s: {', '.join(sorted(pending))}{said}")
            if pending:
                time.sleep(0.2)
