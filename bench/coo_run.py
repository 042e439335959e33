"""Every COO workload in order: B8 idle, warm-up, B1 (+ B8 under load), B2, B3, B4, B6, B7 (COO
restarted with its rate limiter on), B5, and the scale workload (full profile, or ``--scale`` alone)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import coo_dbcost, http_load, stats
from bench.budget import Budget
from bench.config import Profile
from bench.coo import HIGH_RATE_LIMIT_PER_MINUTE, SHAPES, CooClient, CooStack
from bench.coo_workloads import (
    COMPLETION_NOTE,
    Completions,
    MissionTable,
    RssSampler,
    Workflows,
    rss_now_mib,
    run_batch,
    run_open_loop,
)
from bench.infra import Infra
from bench.procs import CHILDREN, Child, python_argv
from services.cli.embedded import free_port

Save = Callable[[str, Any], None]
B4_FRACTION = 0.5  # B4 runs at this fraction of the system's own B1 rate (unless --b4-rate)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)  # noqa: T201


class CooDown(RuntimeError):
    """A COO service died mid-run: later workloads cannot be measured."""


def _check_alive(stack: CooStack) -> None:
    dead = stack.dead_service()
    if dead is not None:
        raise CooDown(
            f"COO {dead} exited (code {stack.children[dead].proc.returncode}):\n{stack.children[dead].tail()}"
        )


async def _workloads(
    stack: CooStack, profile: Profile, budget: Budget, save: Save, completions: Completions, b4_rate: float
) -> None:
    client = CooClient(stack.api_url, stack.api_key)
    table = await MissionTable.open(stack)
    try:
        workflows = Workflows(client)
        names = {
            label: await workflows.register(kind, label)
            for label, kind in (
                ("warm", "one_step"),
                ("b1", "one_step"),
                ("b2", "chain3"),
                ("b3", "fanout"),
                ("b4", "one_step"),
                ("b5_on", "one_step"),
                ("b5_off", "one_step"),
                ("b6", "one_step"),
            )
        }
        conc = profile.submit_concurrency

        await asyncio.sleep(2.0)
        idle = rss_now_mib(stack)
        save("b8_rss", {"idle_mib": idle})
        log(f"B8 idle RSS (MiB): {idle}")

        await run_batch(
            client,
            table,
            names["warm"],
            count=profile.warmup_missions,
            steps_per_mission=1,
            concurrency=conc,
            deadline_s=budget.deadline(60),
            unit="missions",
            completions=completions,
        )

        plan = (
            ("b1", "one_step", profile.b1_missions, 1, "missions"),
            ("b2", "chain3", profile.b2_chains, 3, "chains"),
            ("b3", "fanout", profile.b3_fanouts, 100, "fan-outs"),
        )
        batches: dict[str, dict[str, Any]] = {}
        sampler = RssSampler(stack)
        for key, kind, count, steps, unit in plan:
            if not budget.allows(10):
                batches[key] = stats.skipped("time budget")
                save(key, batches[key])
                continue
            log(f"{key.upper()}: {count} {unit} ({SHAPES[kind]}) ...")
            with sampler if key == "b1" else contextlib.nullcontext():
                result = await run_batch(
                    client,
                    table,
                    names[key],
                    count=count,
                    steps_per_mission=steps,
                    concurrency=min(conc, count),
                    deadline_s=budget.deadline(profile.batch_deadline_s),
                    unit=unit,
                    completions=completions,
                )
            result["note"] = f"{COMPLETION_NOTE}; {result['note']}"
            batches[key] = result
            save(key, result)
            log(
                f"{key.upper()}: {result['items_per_s']} {unit}/s, {result['steps_per_s']} steps/s "
                f"({result['completed']}/{count} ok in {result['elapsed_s']}s)"
            )
            if key == "b1":
                save("b8_rss", {"idle_mib": idle, "under_b1": sampler.summary()})
            _check_alive(stack)
        b1 = batches["b1"]

        rate = b4_rate if b4_rate > 0 else B4_FRACTION * float(b1.get("items_per_s") or 0.0)
        if rate > 0 and budget.allows(profile.b4_duration_s + 5):
            log(f"B4: open loop at {rate:.2f}/s for {profile.b4_duration_s:g}s ...")
            b4 = await run_open_loop(
                client,
                table,
                names["b4"],
                rate_per_s=rate,
                duration_s=profile.b4_duration_s,
                max_missions=profile.b4_max_missions,
                drain_s=profile.latency_drain_s,
                completions=completions,
            )
            b4["rate_source"] = "--b4-rate" if b4_rate > 0 else f"{B4_FRACTION:.0%} of its own B1 rate"
            save("b4", b4)
            log(f"B4: p50 {b4['p50_s']}s p95 {b4['p95_s']}s p99 {b4['p99_s']}s ({b4['completed']}/{b4['sent']})")
        else:
            save("b4", stats.skipped("no B1 rate" if rate <= 0 else "time budget"))
        _check_alive(stack)

        b7_mission = await _some_mission(table, names["b1"]) if b1.get("completed") else None

        if budget.allows(profile.b6_background_s + 15):
            log(f"B6: Postgres work per step ({profile.b6_missions} missions; COO is stopped at the end) ...")
            b6 = await coo_dbcost.measure(
                stack,
                client,
                names["b6"],
                missions=profile.b6_missions,
                concurrency=conc,
                deadline_s=budget.deadline(profile.batch_deadline_s),
                background_s=profile.b6_background_s,
            )
            save("b6", b6)
            log(
                f"B6: {b6['pg_stat_database_per_step'].get('xact_commit')} commits/step (pg_stat_database), "
                f"{b6['statements'].get('statements_per_step')} statements/step"
            )
        else:
            save("b6", stats.skipped("time budget"))
    finally:
        await client.close()
        await table.close()
    await _b7(stack, profile, budget, b7_mission, save)
    await _telemetry(stack, profile, budget, names, save, completions)
    if profile.scale_in_profile:
        await _scale(stack, profile, budget, save, completions)


async def _b7(stack: CooStack, profile: Profile, budget: Budget, mission_id: str | None, save: Save) -> None:
    """B7: COO restarted with its rate limiter on (the per-key limit raised so that one key's load is
    never refused), ``GET /v1/missions/{id}`` vs FastAPI + one asyncpg fetch of the same row."""
    if mission_id is None:
        save("b7", stats.skipped("no succeeded B1 mission to read"))
        return
    if not budget.allows(2 * profile.b7_duration_s + 15):
        save("b7", stats.skipped("time budget"))
        return
    await asyncio.to_thread(stack.stop)
    stack.rate_limit_per_minute = HIGH_RATE_LIMIT_PER_MINUTE
    try:
        await asyncio.to_thread(stack.start, "INFO")
        log(
            f"B7: GET /v1/missions/{{id}} (rate limiter on, {HIGH_RATE_LIMIT_PER_MINUTE}/min per key) vs "
            f"FastAPI + asyncpg, {profile.b7_duration_s:g}s each ..."
        )
        b7 = await asyncio.to_thread(
            http_load.compare,
            f"{stack.api_url}/v1/missions/{mission_id}",
            stack.api_key,
            database_url=stack.infra.database_url,
            schema=stack.schema,
            mission_id=mission_id,
            log_dir=stack.data_dir / "logs",
            connections=profile.b7_connections,
            duration_s=profile.b7_duration_s,
        )
        b7["coo_rate_limit_per_minute"] = HIGH_RATE_LIMIT_PER_MINUTE
        save("b7", b7)
        log(
            f"B7: COO {b7['coo_get_mission'].get('requests_per_s')} req/s, "
            f"{http_load.BASELINE} {b7[http_load.BASELINE].get('requests_per_s')} req/s"
        )
        _check_alive(stack)
    finally:
        stack.rate_limit_per_minute = 0


async def _some_mission(table: MissionTable, workflow: str) -> str:
    row = await table.conn.fetchval(
        "SELECT id::text FROM missions WHERE workflow_name = $1 AND status = 'succeeded' LIMIT 1", workflow
    )
    if row is None:
        raise RuntimeError("no succeeded mission to read for B7")
    return str(row)


async def _b5_run(
    stack: CooStack,
    profile: Profile,
    budget: Budget,
    names: dict[str, str],
    mode: str,
    telemetry: dict[str, str],
    completions: Completions,
) -> dict[str, Any]:
    """Restart COO with telemetry ``mode`` (``on``/``off``), warm it up, then run B1's shape with ``b5_missions``."""
    level = "INFO" if mode == "on" else "WARNING"
    await asyncio.to_thread(stack.stop)
    stack.telemetry_env = telemetry
    try:
        await asyncio.to_thread(stack.start, level)
    finally:
        stack.telemetry_env = {}
    client = CooClient(stack.api_url, stack.api_key)
    table = await MissionTable.open(stack)
    try:
        await run_batch(
            client,
            table,
            names["warm"],
            count=profile.warmup_missions,
            steps_per_mission=1,
            concurrency=profile.submit_concurrency,
            deadline_s=budget.deadline(60),
            unit="missions",
            completions=completions,
        )
        before = stack.log_bytes()
        result = await run_batch(
            client,
            table,
            names[f"b5_{mode}"],
            count=profile.b5_missions,
            steps_per_mission=1,
            concurrency=profile.submit_concurrency,
            deadline_s=budget.deadline(profile.batch_deadline_s),
            unit="missions",
            completions=completions,
        )
        result["log_level"] = level
        result["telemetry"] = mode
        result["log_bytes_per_mission"] = round((stack.log_bytes() - before) / max(1, result["completed"]), 1)
        return result
    finally:
        await client.close()
        await table.close()


class OtlpReceiverProcess:
    """``python -m bench.otlp_receiver`` in a process of its own; ``stats()`` reads its ``GET /stats``."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.child: Child = CHILDREN.spawn(
            "otlp-receiver",
            python_argv("bench.otlp_receiver", "--port", str(self.port)),
            log=log_dir / "otlp-receiver.log",
            cwd=Path(__file__).resolve().parents[1],
        )

    def stats(self) -> dict[str, int]:
        answer = httpx.get(f"{self.endpoint}/stats", timeout=5.0)
        answer.raise_for_status()
        counts: dict[str, int] = answer.json()
        return counts

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        give_up = time.monotonic() + deadline_s
        while time.monotonic() < give_up:
            if not self.child.alive():
                raise RuntimeError(f"OTLP receiver exited:\n{self.child.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                self.stats()
                return
            time.sleep(0.1)
        raise RuntimeError(f"OTLP receiver not ready after {deadline_s:g}s")

    def stop(self) -> None:
        CHILDREN.stop(self.child)


async def _telemetry(
    stack: CooStack, profile: Profile, budget: Budget, names: dict[str, str], save: Save, completions: Completions
) -> None:
    """B5: everything on (traces, logs and metrics exported over OTLP/HTTP to a receiver process that
    decodes them, JSON logs at INFO) vs everything off (``OTEL_SDK_DISABLED=true``, logs at WARNING)."""
    if not budget.allows(10):
        save("b5", stats.skipped("time budget"))
        return
    runs: dict[str, dict[str, Any]] = {}
    received: dict[str, int] = {}
    receiver = OtlpReceiverProcess(stack.data_dir / "logs")
    try:
        await asyncio.to_thread(receiver.wait_ready)
        on_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }
        for mode, env in (("on", on_env), ("off", {"OTEL_SDK_DISABLED": "true"})):
            log(f"B5: COO restarted with telemetry {mode}, {profile.b5_missions} missions ...")
            before = await asyncio.to_thread(receiver.stats) if mode == "on" else {}
            runs[mode] = await _b5_run(stack, profile, budget, names, mode, env, completions)
            _check_alive(stack)
            if mode == "on":
                await asyncio.to_thread(stack.stop)  # flushes the exporters
                after = await asyncio.to_thread(receiver.stats)
                received = {k: v - before.get(k, 0) for k, v in after.items()}
    finally:
        await asyncio.to_thread(receiver.stop)
    on, off = runs["on"], runs["off"]
    on["spans_exported"] = received.get("spans", 0)
    on["otlp_received"] = received  # everything since the restart: warm-up, run and shutdown flush
    ratio = round(on["items_per_s"] / off["items_per_s"], 3) if off["items_per_s"] else None
    save(
        "b5",
        {
            "note": "'on' = traces, logs and metrics exported over OTLP/HTTP (batch processors) to a receiver "
            "decoding them in a process of its own (python -m bench.otlp_receiver) on the same machine, logs at "
            "INFO; 'off' = OTEL_SDK_DISABLED=true, logs at WARNING (services restarted and warmed up before "
            "each run)",
            "on": on,
            "off": off,
            "on_over_off": ratio,
        },
    )
    log(f"B5: telemetry on {on['items_per_s']}/s ({on['spans_exported']} spans exported) vs off {off['items_per_s']}/s")


SCALE_NOTE = (
    "B1's shape (one-step missions, closed batch, {conc} concurrent submitters spread over the orchestrators) "
    "with COO restarted as each shape: w = worker processes, o = orchestrator processes (each on its own port), "
    "one sandbox, one Postgres and one NATS"
)


def scale_key(workers: int, orchestrators: int) -> str:
    return f"w{workers}_o{orchestrators}"


async def _scale(stack: CooStack, profile: Profile, budget: Budget, save: Save, completions: Completions) -> None:
    """The scale workload: the same batch with 1/2/4 workers and 1/2 orchestrators."""
    out: dict[str, Any] = {"note": SCALE_NOTE.format(conc=profile.submit_concurrency)}
    save("scale", out)
    for workers, orchestrators in profile.scale_shapes:
        key = scale_key(workers, orchestrators)
        if not budget.allows(20):
            out[key] = stats.skipped("time budget")
            save("scale", out)
            continue
        log(f"scale: COO with {workers} worker(s), {orchestrators} orchestrator(s), {profile.scale_missions} missions")
        await asyncio.to_thread(stack.stop)
        await asyncio.to_thread(stack.start, "INFO", workers=workers, orchestrators=orchestrators)
        clients = [CooClient(url, stack.api_key) for url in stack.api_urls]
        table = await MissionTable.open(stack)
        try:
            workflows = Workflows(clients[0])
            warm = await workflows.register("one_step", f"scale_warm_{key}")
            name = await workflows.register("one_step", f"scale_{key}")
            await run_batch(
                clients,
                table,
                warm,
                count=profile.warmup_missions,
                steps_per_mission=1,
                concurrency=profile.submit_concurrency,
                deadline_s=budget.deadline(60),
                unit="missions",
                completions=completions,
            )
            result = await run_batch(
                clients,
                table,
                name,
                count=profile.scale_missions,
                steps_per_mission=1,
                concurrency=profile.submit_concurrency,
                deadline_s=budget.deadline(profile.batch_deadline_s),
                unit="missions",
                completions=completions,
            )
            _check_alive(stack)
        finally:
            for client in clients:
                await client.close()
            await table.close()
        result.update({"workers": workers, "orchestrators": orchestrators, "sandboxes": 1})
        out[key] = result
        save("scale", out)
        log(f"scale {key}: {result['items_per_s']} missions/s ({result['completed']}/{profile.scale_missions} ok)")


async def _run(stack: CooStack, profile: Profile, budget: Budget, save: Save, b4_rate: float, scale_only: bool) -> None:
    completions = Completions(stack).start()  # subscribed before anything is submitted
    try:
        if scale_only:
            await _scale(stack, profile, budget, save, completions)
        else:
            await _workloads(stack, profile, budget, save, completions, b4_rate)
    finally:
        await asyncio.to_thread(completions.stop)


def run_coo(
    infra: Infra, profile: Profile, budget: Budget, save: Save, *, b4_rate: float = 0.0, scale_only: bool = False
) -> None:
    """Start COO, run its workloads (or only the scale workload), stop it and remove its schema and
    streams. ``b4_rate`` > 0 overrides B4's rate (else half of COO's own B1 rate)."""
    stack = CooStack(infra)
    save("config", {**stack.config(), "shapes": SHAPES})
    try:
        log("COO: migrating and starting orchestrator, worker, sandbox ...")
        t = time.monotonic()
        stack.migrate()
        if not scale_only:
            stack.start("INFO")
            save("startup_s", round(time.monotonic() - t, 2))
        asyncio.run(_run(stack, profile, budget, save, b4_rate, scale_only))
    except CooDown as exc:
        save("error", str(exc))
        log(str(exc))
    except Exception as exc:  # recorded, and the peers still run
        save("error", "".join(traceback.format_exception(exc))[-3000:])
        log(f"COO run failed: {exc!r}")
    finally:
        try:
            stack.cleanup()
        except Exception as exc:
            log(f"COO cleanup failed: {exc!r}")
