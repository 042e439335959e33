"""``python -m bench [--quick]``: COO and its peers, the same workloads, one run, one machine.

Writes ``bench/results/<timestamp>.json`` (after every workload, so an interrupted run still leaves
its numbers), appends a table to ``bench/RESULTS.md``, draws charts, and prints COO/peer ratios."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import environment, report
from bench.budget import Budget
from bench.config import FULL, QUICK, SMOKE, Profile
from bench.coo_run import log, run_coo
from bench.infra import server_version, start_infra
from bench.peers import PEERS
from bench.peers.runner import run_peer
from bench.procs import CHILDREN, install_cleanup
from services.cli.embedded import nats_server_binary

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


class Run:
    """The run's results, written to disk every time a number arrives."""

    def __init__(self, profile: Profile, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "run": {
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "profile": profile.name,
                "workloads": profile.__dict__,
                "machine": environment.machine(),
                "python": environment.python(),
                "packages": environment.packages(),
            },
            "coo": {},
            "peers": {},
        }

    def save(self) -> None:
        report.write_json(self.path, self.data)

    def coo(self, key: str, value: Any) -> None:
        self.data["coo"][key] = value
        self.save()

    def peer(self, name: str, value: Any) -> None:
        self.data["peers"][name] = value
        self.save()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads (about 2 minutes)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest workloads, to check that the harness runs (the test suite's run; its figures mean nothing)",
    )
    parser.add_argument(
        "--systems",
        default="coo," + ",".join(PEERS),
        help="comma-separated subset of: coo," + ",".join(PEERS) + " (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the JSON, the charts and RESULTS.md here instead of bench/results and bench/RESULTS.md",
    )
    parser.add_argument(
        "--b4-rate",
        type=float,
        default=None,
        help="B4 arrival rate for every system (default: each system at 50%% of its own B1 rate)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="run only the scale workload: COO with 1/2/4 worker and 1/2 orchestrator processes, B1's shape "
        "(the full profile runs it too, after COO's other workloads; --quick --scale for a small one)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = SMOKE if args.smoke else QUICK if args.quick else FULL
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"coo", *PEERS}
    if unknown:
        sys.stderr.write(f"unknown systems: {', '.join(sorted(unknown))}\n")
        return 2
    install_cleanup()
    results_dir = args.out or RESULTS_DIR
    results_md = args.out / "RESULTS.md" if args.out else RESULTS_MD
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = Run(profile, results_dir / f"{stamp}.json")
    if args.scale:  # the scale workload alone: COO only
        systems = ["coo"]
    peers = [p for p in PEERS if p in systems]
    if args.scale:
        total_s = profile.scale_budget_s
    else:
        total_s = profile.total_budget_s + (profile.scale_budget_s if profile.scale_in_profile else 0.0)
    budget = Budget(total_s, reserved_s=profile.peer_reserve_s * len(peers))
    log(f"bench profile '{profile.name}', results -> {run.path}")
    started = time.monotonic()
    infra = None
    try:
        infra = start_infra()
        run.data["run"]["infra"] = {
            **infra.describe(),
            "postgres_version": asyncio.run(server_version(infra.database_url)),
            "nats_version": environment.command_version([nats_server_binary(), "--version"]),
        }
        run.save()
        b4_rate = float(args.b4_rate or 0.0)  # 0: each system at half its own B1 rate
        run.data["run"]["b4_rate_override_per_s"] = b4_rate or None
        if "coo" in systems:
            run_coo(infra, profile, budget, run.coo, b4_rate=b4_rate, scale_only=args.scale)
        for name in peers:
            budget.release(profile.peer_reserve_s)
            log(f"{name}: starting ...")
            try:
                run.peer(name, run_peer(name, infra, profile, budget, b4_rate, results_dir))
            except Exception as exc:  # a peer that cannot run is recorded, not fatal
                run.peer(name, {"skipped": True, "reason": f"{exc.__class__.__name__}: {exc}"[:1000]})
    except KeyboardInterrupt:
        log("interrupted: stopping everything started ...")
        run.data["run"]["interrupted"] = True
    finally:
        CHILDREN.stop_all()
        if infra is not None:
            infra.stop()
        run.data["run"]["duration_s"] = round(time.monotonic() - started, 1)
        run.data["run"]["b4_rate_per_s"] = report.b4_rates(run.data)
        run.data["ratios"] = report.ratios(run.data)
        run.save()
    charts = report.charts(run.data, results_dir / stamp)
    report.append_markdown(results_md, run.data, run.path, charts)
    report.print_summary(run.data, run.path, charts)
    return 130 if run.data["run"].get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
