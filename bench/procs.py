"""Every process the harness starts goes through here (COO's own launcher,
``services.cli.processes``), so that all of them are stopped on the way out, whether the run ends
normally, raises, or is interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import atexit
import signal
import time
from types import FrameType

from services.cli.processes import Child, Children, python_argv

__all__ = ["CHILDREN", "Child", "Children", "install_cleanup", "python_argv", "wait_until"]


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
