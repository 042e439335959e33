"""``python -m bench.profile``: B1's shape with py-spy attached to each COO service.

Starts COO the way the benchmark does, warms it up, then records every service with ``py-spy record``
while ``--missions`` one-step missions run. Writes, under ``bench/results/profiles/<timestamp>/``, one
speedscope file and one collapsed-stack file per service, and prints each service's busiest functions
(self time and inclusive time), so that an optimisation starts from a measured hot path."""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import http_load
from bench.coo import CooClient, CooStack
from bench.coo_run import log
from bench.coo_workloads import MissionTable, Workflows, run_batch
from bench.infra import start_infra
from bench.procs import CHILDREN, install_cleanup

PROFILES = Path(__file__).resolve().parent / "results" / "profiles"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def spawn_spy(pid: int, seconds: float, output: Path, *, native: bool = False) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` for ``seconds``, as collapsed stacks in ``output``."""
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    argv += ["--native"] if native else ["--nonblocking"]
    argv += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def top_functions(collapsed: Path, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(self samples, inclusive samples, total) per ``function (file:line)`` from a collapsed-stack file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    return own.most_common(limit), inclusive.most_common(limit), total


def cpu_seconds(stack: CooStack) -> dict[str, float]:
    """CPU time (user + system) used so far by each COO service, Postgres, NATS and this driver."""
    groups: dict[str, float] = collections.defaultdict(float)
    services = {child.pid: service for service, child in stack.children.items()}
    for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
        name, times = proc.info["name"] or "", proc.info["cpu_times"]
        if times is None:
            continue
        if proc.info["pid"] in services:
            group = services[proc.info["pid"]]
        elif name.startswith("postgres"):
            group = "postgres"
        elif name.startswith("nats-server"):
            group = "nats"
        elif proc.info["pid"] == os.getpid():
            group = "driver"
        else:
            continue
        groups[group] += times.user + times.system
    return dict(groups)


def _short(frame: str) -> str:
    """``fn (path/to/site-packages/pkg/mod.py:12)`` → ``fn (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where.rsplit(':', 1)[0]})"


async def _one_by_one(client: CooClient, table: MissionTable, workflow: str, count: int) -> None:
    """Latency with nothing else running: submit, wait until it ended (stored ``finished_at``), repeat."""
    latencies: list[float] = []
    for i in range(count):
        sent = time.time()
        mission_id = await client.submit(workflow, {"value": i})
        while True:
            finished = await table.conn.fetchval(
                "SELECT extract(epoch FROM finished_at)::float8 FROM missions WHERE id = $1::uuid", mission_id
            )
            if finished is not None:
                latencies.append(1000 * (finished - sent))
                break
            await asyncio.sleep(0.002)
    await _latency_breakdown(table, workflow, count)
    latencies.sort()
    log(
        f"one by one, {count} missions: p50 {latencies[len(latencies) // 2]:.1f} ms, "
        f"p90 {latencies[int(len(latencies) * 0.9)]:.1f} ms, max {latencies[-1]:.1f} ms"
    )


async def _latency_breakdown(table: MissionTable, workflow: str, count: int) -> None:
    """Where a lone mission's time goes, from the timestamps COO stores (medians, ms)."""
    rows = await table.conn.fetch(
        """
        SELECT m.id,
               extract(epoch FROM m.created_at) AS created,
               extract(epoch FROM s.dispatched_at) AS dispatched,
               extract(epoch FROM r.started_at) AS started,
               extract(epoch FROM r.created_at) AS stored,
               extract(epoch FROM s.finished_at) AS applied,
               extract(epoch FROM m.finished_at) AS finished
        FROM missions m JOIN steps s ON s.mission_id = m.id JOIN agent_results r ON r.step_id = s.id
        WHERE m.workflow_name = $1 AND m.status = 'succeeded'
        ORDER BY m.created_at DESC LIMIT $2
        """,
        workflow,
        count,
    )
    spans = {
        "submit (transaction start) -> step dispatched": ("created", "dispatched"),
        "dispatched -> worker started (commit, NATS, claim)": ("dispatched", "started"),
        "worker started -> result stored (agent, insert)": ("started", "stored"),
        "result stored -> step succeeded (commit, NATS, engine)": ("stored", "applied"),
        "step succeeded -> mission finished": ("applied", "finished"),
    }
    for label, (a, b) in spans.items():
        values = sorted(1000 * float(r[b] - r[a]) for r in rows if r[a] is not None and r[b] is not None)
        if values:
            log(f"  {label:58s} p50 {values[len(values) // 2]:7.1f} ms")


async def _drive(
    stack: CooStack,
    missions: int,
    concurrency: int,
    seconds: float,
    out: Path,
    one_by_one: int,
    native: bool,
    get_seconds: float,
) -> dict[str, float]:
    client = CooClient(stack.api_url, stack.api_key)
    table = await MissionTable.open(stack)
    try:
        workflows = Workflows(client)
        warm, measured = await workflows.register("one_step", "warm"), await workflows.register("one_step", "prof")
        await run_batch(
            client, table, warm, count=50, steps_per_mission=1, concurrency=concurrency, deadline_s=60, unit="missions"
        )
        if one_by_one:
            await _one_by_one(client, table, warm, one_by_one)
        if get_seconds:  # B7's request, under py-spy, instead of B1
            mission_id = await table.conn.fetchval("SELECT id::text FROM missions LIMIT 1")
            spy = spawn_spy(stack.children["orchestrator"].pid, get_seconds, out / "orchestrator-get.collapsed")
            result = await asyncio.to_thread(
                http_load.load,
                f"{stack.api_url}/v1/missions/{mission_id}",
                headers={"Authorization": f"Bearer {stack.api_key}"},
                connections=16,
                duration_s=get_seconds,
            )
            await asyncio.to_thread(spy.wait)
            log(f"GET /v1/missions/{{id}}: {result}")
            return {}
        cpu_before = cpu_seconds(stack)
        spies = (
            {}
            if seconds <= 0
            else {
                service: spawn_spy(child.pid, seconds, out / f"{service}.collapsed", native=native)
                for service, child in stack.children.items()
            }
        )
        result = await run_batch(
            client,
            table,
            measured,
            count=missions,
            steps_per_mission=1,
            concurrency=concurrency,
            deadline_s=max(seconds, 0) + 120,
            unit="missions",
        )
        cpu_after = cpu_seconds(stack)
        done = max(1, int(result["completed"]))
        for group in sorted(cpu_after):
            used = cpu_after[group] - cpu_before.get(group, 0.0)
            log(f"CPU {group:>12}: {used:7.2f}s, {1000 * used / done:6.2f} ms per mission")
        for service, spy in spies.items():
            _, err = await asyncio.to_thread(spy.communicate)
            if spy.returncode != 0:
                log(f"py-spy on {service} exited {spy.returncode}: {err.decode(errors='replace')[-500:]}")
        return {"missions_per_s": float(result["items_per_s"] or 0.0), "completed": float(result["completed"])}
    finally:
        await client.close()
        await table.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--missions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="how long py-spy records each service (0: no py-spy, CPU only)"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--get", type=float, default=0.0, help="profile B7's GET for this many seconds instead")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (pauses the process)")
    parser.add_argument("--one-by-one", type=int, default=0, help="first, this many missions one at a time (latency)")
    args = parser.parse_args(argv)
    install_cleanup()
    out = PROFILES / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    infra = start_infra()
    stack = CooStack(infra)
    try:
        stack.migrate()
        stack.start("INFO")
        started = time.monotonic()
        result = asyncio.run(
            _drive(stack, args.missions, args.concurrency, args.seconds, out, args.one_by_one, args.native, args.get)
        )
        log(f"B1 under py-spy: {result} in {time.monotonic() - started:.1f}s; profiles in {out}")
    finally:
        stack.cleanup()
        CHILDREN.stop_all()
        infra.stop()
    report(out, args.top)
    return 0


def report(out: Path, top: int) -> None:
    for collapsed in sorted(out.glob("*.collapsed")):
        own, inclusive, total = top_functions(collapsed, top)
        print(f"\n== {collapsed.stem}: {total} samples ==")  # noqa: T201
        print("-- self --")  # noqa: T201
        for name, count in own:
            print(f"{100 * count / max(1, total):5.1f}%  {name}")  # noqa: T201
        print("-- inclusive --")  # noqa: T201
        for name, count in inclusive:
            print(f"{100 * count / max(1, total):5.1f}%  {name}")  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
