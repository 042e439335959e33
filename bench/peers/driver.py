"""The peer side of the harness: the same workloads as COO's, run by a driver process against one
peer through that peer's own client API, measured the same way (first submission to last recorded
completion; open-loop latency from the scheduled arrival to the recorded completion).

A peer module provides a ``Driver``; ``main()`` runs the workloads and writes JSON to ``--out``
after each one, so a driver that is killed at its deadline still leaves what it measured."""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from bench import stats
from bench.config import PROFILES, Profile

POLL_S = 0.25
B4_FRACTION = 0.5  # B4 runs each system at this fraction of its own B1 rate (unless --b4-rate)
KINDS = {"one_step": 1, "chain3": 3, "fanout": 100}


class Driver(abc.ABC):
    """One peer, as seen by the workloads."""

    name: str = "peer"
    about: str = ""
    submit_concurrency: int = 1  # concurrent submitters (1 for a blocking client)

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Connect, register workflows."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Close connections."""

    @abc.abstractmethod
    async def submit(self, kind: str, label: str, i: int) -> Hashable:
        """Start one item of ``kind`` (one_step | chain3 | fanout); returns its handle."""

    @abc.abstractmethod
    async def count_done(self, kind: str, label: str, handles: list[Hashable]) -> int:
        """How many of ``handles`` have ended (cheap: called every poll)."""

    @abc.abstractmethod
    async def outcomes(
        self, kind: str, label: str, handles: list[Hashable]
    ) -> dict[Hashable, tuple[str, float | None]]:
        """handle -> (status, completion time as epoch seconds) for every ended handle; status
        'succeeded' for a successful one."""


async def _submit_all(driver: Driver, kind: str, label: str, count: int, deadline: float, out: dict[str, Any]) -> None:
    handles: list[Hashable] = out["handles"]
    counter = iter(range(count))

    async def submitter() -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            try:
                handles.append(await driver.submit(kind, label, i))
            except Exception as exc:
                out["errors"] += 1
                out["first_error"] = out["first_error"] or repr(exc)[:300]

    await asyncio.gather(*(submitter() for _ in range(driver.submit_concurrency)))
    out["last"] = time.time()
    out["done"] = True


async def run_batch(driver: Driver, kind: str, label: str, count: int, deadline_s: float, unit: str) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    sub: dict[str, Any] = {"handles": [], "errors": 0, "first_error": "", "first": time.time(), "last": 0.0}
    sub["done"] = False
    task = asyncio.create_task(_submit_all(driver, kind, label, count, deadline, sub))
    finished = False
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            if sub["done"] and await driver.count_done(kind, label, sub["handles"]) >= len(sub["handles"]):
                finished = True
                break
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    handles = sub["handles"]
    ended = await driver.outcomes(kind, label, handles)
    ok = [t for status, t in ended.values() if status == "succeeded" and t is not None]
    failed = sum(1 for status, _ in ended.values() if status != "succeeded")
    note = f"{len(handles)} submitted in {(sub['last'] or time.time()) - sub['first']:.2f}s"
    if sub["errors"]:
        note += f"; {sub['errors']} submit errors, first: {sub['first_error']}"
    return stats.throughput(
        unit=unit,
        items=count,
        steps_per_item=KINDS[kind],
        completed=len(ok),
        failed=failed,
        unfinished=len(handles) - len(ended),
        submit_errors=sub["errors"],
        first_submit=sub["first"],
        last_submit=sub["last"] or time.time(),
        last_completion=max(ok) if ok else None,
        timed_out=not finished,
        note=note,
    )


async def run_open_loop(
    driver: Driver, label: str, *, rate_per_s: float, duration_s: float, max_items: int, drain_s: float
) -> dict[str, Any]:
    offsets = stats.poisson_arrivals(rate_per_s, duration_s, max_items)
    scheduled: dict[Hashable, float] = {}
    errors: list[str] = []
    in_flight: set[asyncio.Task[None]] = set()
    max_lag = 0.0

    async def one(i: int, at: float) -> None:
        try:
            scheduled[await driver.submit("one_step", label, i)] = at
        except Exception as exc:
            errors.append(repr(exc)[:300])

    t0, m0 = time.time(), time.monotonic()
    for i, offset in enumerate(offsets):
        delay = m0 + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, time.monotonic() - (m0 + offset))
        task = asyncio.create_task(one(i, t0 + offset))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=drain_s)
    handles = list(scheduled)
    deadline = time.monotonic() + drain_s
    for _ in range(int(drain_s / POLL_S) + 1):  # bounded: at most drain_s of polling
        if time.monotonic() > deadline or await driver.count_done("one_step", label, handles) >= len(handles):
            break
        await asyncio.sleep(POLL_S)
    ended = await driver.outcomes("one_step", label, handles)
    latencies = [t - scheduled[h] for h, (status, t) in ended.items() if status == "succeeded" and t is not None]
    return stats.latency(
        target_rate_per_s=rate_per_s,
        duration_s=duration_s,
        scheduled=len(offsets),
        sent=len(scheduled) + len(errors),
        latencies_s=latencies,
        failed=sum(1 for status, _ in ended.values() if status != "succeeded"),
        unfinished=len(handles) - len(ended),
        submit_errors=len(errors),
        max_send_lag_s=max_lag,
        note=f"first submit error: {errors[0]}" if errors else "",
    )


class Output:
    def __init__(self, path: Path, driver: Driver) -> None:
        self.path = path
        self.data: dict[str, Any] = {"about": driver.about}
        self.write()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        os.replace(tmp, self.path)


def log(name: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]   {name}: {message}", flush=True)  # noqa: T201


async def run_workloads(driver: Driver, profile: Profile, b4_rate: float, budget_s: float, out: Output) -> None:
    give_up = time.monotonic() + budget_s

    def deadline(cap: float) -> float:
        return max(3.0, min(cap, give_up - time.monotonic()))

    await driver.setup()
    try:
        warm = await run_batch(driver, "one_step", "warm", profile.warmup_missions, deadline(30), "items")
        if warm["completed"] == 0:
            raise RuntimeError(f"{driver.name} completed none of {profile.warmup_missions} warm-up items: {warm}")
        plan: list[tuple[str, str, str, int, str]] = [
            ("b1", "one_step", "b1", profile.b1_missions, "missions"),
            ("b2", "chain3", "b2", profile.b2_chains, "chains"),
            ("b3", "fanout", "b3", profile.b3_fanouts, "fan-outs"),
        ]
        for key, kind, label, count, unit in plan:
            if give_up - time.monotonic() < 3:
                out.put(key, stats.skipped("time budget"))
                continue
            result = await run_batch(driver, kind, label, count, deadline(profile.batch_deadline_s), unit)
            out.put(key, result)
            log(
                driver.name,
                f"{key.upper()}: {result['items_per_s']} {unit}/s, {result['steps_per_s']} steps/s "
                f"({result['completed']}/{count} ok)",
            )
        b4_override = b4_rate > 0
        if not b4_override:  # 50% of this system's own B1 rate, like COO's
            b1 = out.data.get("b1") or {}
            b4_rate = B4_FRACTION * float(b1.get("items_per_s") or 0.0)
        if b4_rate <= 0:
            out.put("b4", stats.skipped(f"no B1 rate of its own to run at ({driver.name} completed no B1 mission)"))
        elif give_up - time.monotonic() < profile.b4_duration_s + 3:
            out.put("b4", stats.skipped("time budget"))
        else:
            b4 = await run_open_loop(
                driver,
                "b4",
                rate_per_s=b4_rate,
                duration_s=profile.b4_duration_s,
                max_items=profile.b4_max_missions,
                drain_s=min(profile.latency_drain_s, deadline(60)),
            )
            b4["rate_source"] = "--b4-rate" if b4_override else f"{B4_FRACTION:.0%} of its own B1 rate"
            out.put("b4", b4)
            log(driver.name, f"B4: p50 {b4['p50_s']}s p95 {b4['p95_s']}s p99 {b4['p99_s']}s")
    finally:
        await driver.teardown()


def main(make_driver: Callable[[dict[str, Any]], Driver]) -> None:
    """Entry point of a peer's driver process: ``python -m bench.peers.<peer> drive --spec JSON``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["drive"])
    parser.add_argument(
        "--spec", required=True, help="JSON: profile, b4_rate (0: half its own B1 rate), budget_s, out, peer settings"
    )
    args = parser.parse_args()
    spec = json.loads(args.spec)
    profile = PROFILES[spec["profile"]]
    driver = make_driver(spec)
    out = Output(Path(spec["out"]), driver)
    asyncio.run(run_workloads(driver, profile, float(spec["b4_rate"]), float(spec["budget_s"]), out))
