"""The benchmark runs end to end and produces numbers: its smoke profile (the quick profile's
workloads and peers, smaller). No speed is asserted here; speed is read from ``make bench``'s
ratios, never from a timed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def test_the_quick_benchmark_runs_every_workload_and_writes_its_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COO_")}
    for name in ("COO_DATABASE_URL", "COO_NATS_URL"):  # the configured servers, else embedded ones
        if os.environ.get(name):
            env[name] = os.environ[name]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list(tmp_path.glob("*.json"))
    assert len(runs) == 1, runs
    data = json.loads(runs[0].read_text())
    coo = data["coo"]
    assert "error" not in coo, coo.get("error")
    for key in ("b1", "b2", "b3"):
        assert _positive(coo[key]["steps_per_s"]), coo[key]
        assert coo[key]["completed"] > 0, coo[key]
    assert _positive(coo["b4"]["p50_s"]) and _positive(coo["b4"]["p99_s"]), coo["b4"]
    assert _positive(coo["b5"]["on_over_off"]), coo["b5"]
    assert _positive(coo["b6"]["pg_stat_database_per_step"]["xact_commit"]), coo["b6"]
    statements = coo["b6"]["statements"]  # an external Postgres without pg_stat_statements cannot say
    assert _positive(statements["statements_per_step"]) or statements["source"] == "not measured", statements
    assert _positive(coo["b7"]["coo_get_mission"]["requests_per_s"]), coo["b7"]
    assert _positive(coo["b7"]["fastapi_asyncpg"]["requests_per_s"]), coo["b7"]
    assert _positive(coo["b7"]["coo_over_fastapi_asyncpg"]), coo["b7"]
    assert coo["b7"]["coo_get_mission"]["non_2xx"] == 0, coo["b7"]  # the rate limiter is on, never refusing
    for key in ("b1", "b4"):  # completion = the terminal timeline event's receipt, after COMMIT
        assert coo[key]["completion_source"] == "timeline event after COMMIT", coo[key]
    assert all(_positive(mib) for mib in coo["b8_rss"]["idle_mib"].values()), coo["b8_rss"]
    assert _positive(coo["b5"]["on"]["spans_exported"]), coo["b5"]  # counted by the receiver's own process
    for name, peer in data["peers"].items():  # a peer that cannot run here says why
        assert (peer.get("skipped") and peer.get("reason")) or _positive(peer["b1"]["items_per_s"]), (name, peer)
        if not peer.get("skipped") and not peer["b4"].get("skipped"):  # at half its own B1 rate
            assert peer["b4"]["target_rate_per_s"] > 0, (name, peer["b4"])
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| coo |" in table and "B6" in table and "B7" in table
