"""Every process the harness starts goes through here, so that all of them are stopped on the way
out, whether the run ends normally, raises, or is interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from services.cli.embedded import die_with_parent


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


class Children:
    """The harness's child processes, each the leader of its own process group."""

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
    ) -> Child:
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
            )
        child = Child(name, proc, log, stop_signal)
        self._children.append(child)
        return child

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

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child)


CHILDREN = Children()


def _on_term(signum: int, frame: FrameType | None) -> None:
    del frame
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    """SIGTERM behaves like Ctrl-C (unwinds through ``finally``); atexit stops what is left."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    atexit.register(CHILDREN.stop_all)


def wait_until(predicate: object, *, timeout_s: float, interval_s: float = 0.1, what: str) -> None:
    """Poll a callable until it returns truthy, or raise after the deadline."""
    assert callable(predicate)
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s:g}s")


def python_argv(*module_and_args: str) -> list[str]:
    return [sys.executable, "-m", *module_and_args]
