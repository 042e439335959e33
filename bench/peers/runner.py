"""Running one peer: import its module, let it start what it needs, and run its driver process."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from typing import Any

from bench import stats
from bench.budget import Budget
from bench.config import Profile
from bench.infra import Infra
from bench.procs import CHILDREN, python_argv

REPO = Path(__file__).resolve().parents[2]


def run_peer(
    name: str, infra: Infra, profile: Profile, budget: Budget, b4_rate: float, results_dir: Path
) -> dict[str, Any]:
    try:
        module = importlib.import_module(f"bench.peers.{name}_peer")
    except ImportError as exc:
        return stats.skipped(f"cannot import the {name} peer's client library: {exc}")
    result: dict[str, Any] = module.run(infra, profile, budget, b4_rate, results_dir)
    return result


def drive(
    name: str, spec: dict[str, Any], *, profile: Profile, budget: Budget, b4_rate: float, work_dir: Path
) -> dict[str, Any]:
    """Run ``python -m bench.peers.<name>_peer drive`` and return what it measured (partial results
    too, with an ``error`` when it failed or ran out of time)."""
    out = work_dir / f"{name}-driver.json"
    log = work_dir / f"{name}-driver.log"
    # at least its own reserve, even when the systems before it overran theirs: every peer gets to run
    # its workloads, B4 included
    budget_s = min(profile.peer_timeout_s, max(profile.peer_reserve_s, budget.remaining()))
    full_spec = {**spec, "profile": profile.name, "b4_rate": b4_rate, "budget_s": budget_s - 5, "out": str(out)}
    child = CHILDREN.spawn(
        f"{name}-driver",
        python_argv(f"bench.peers.{name}_peer", "drive", "--spec", json.dumps(full_spec)),
        log=log,
        cwd=REPO,
    )
    error = ""
    try:
        child.proc.wait(timeout=budget_s + 15)
        if child.proc.returncode != 0:
            error = f"driver exited with code {child.proc.returncode}:\n{child.tail(15)}"
    except subprocess.TimeoutExpired:
        error = f"driver still running after {budget_s + 15:.0f}s: stopped"
    finally:
        CHILDREN.stop(child)
    print(child.tail(8), flush=True)  # noqa: T201
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError):
        return stats.skipped(f"{name} driver produced no results. {error}".strip())
    if error:
        result["error"] = error
    if not any(k in result for k in ("b1", "b2", "b3", "b4")):
        return stats.skipped(f"{name} measured nothing. {error}".strip())
    return result
