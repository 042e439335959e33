"""Every COO workload in order: B8 idle, warm-up, B1 (+ B8 under load), B2, B3, B4, B7, B6, B5."""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import coo_dbcost, http_load, stats
from bench.budget import Budget
from bench.config import Profile
from bench.coo import SHAPES, CooClient, CooStack
from bench.coo_workloads import (
    COMPLETION_NOTE,
    MissionTable,
    RssSampler,
    Workflows,
    rss_now_mib,
    run_batch,
    run_open_loop,
)
from bench.infra import Infra

Save = Callable[[str, Any], None]


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


async def _workloads(stack: CooStack, profile: Profile, budget: Budget, save: Save) -> None:
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

        rate = 0.5 * float(b1.get("items_per_s") or 0.0)
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
            )
            save("b4", b4)
            log(f"B4: p50 {b4['p50_s']}s p95 {b4['p95_s']}s p99 {b4['p99_s']}s ({b4['completed']}/{b4['sent']})")
        else:
            save("b4", stats.skipped("no B1 rate" if rate <= 0 else "time budget"))
        _check_alive(stack)

        if budget.allows(2 * profile.b7_duration_s + 5):
            mission_id = await _some_mission(table, names["b1"])
            log(f"B7: GET /v1/missions/{{id}} vs FastAPI hello, {profile.b7_duration_s:g}s each ...")
            b7 = await asyncio.to_thread(
                http_load.compare,
                f"{stack.api_url}/v1/missions/{mission_id}",
                stack.api_key,
                log_dir=stack.data_dir / "logs",
                connections=profile.b7_connections,
                duration_s=profile.b7_duration_s,
            )
            save("b7", b7)
            log(
                f"B7: COO {b7['coo_get_mission'].get('requests_per_s')} req/s, "
                f"hello {b7['fastapi_hello'].get('requests_per_s')} req/s"
            )
        else:
            save("b7", stats.skipped("time budget"))
        _check_alive(stack)

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
    await _telemetry(stack, profile, budget, names, save)


async def _some_mission(table: MissionTable, workflow: str) -> str:
    row = await table.conn.fetchval(
        "SELECT id::text FROM missions WHERE workflow_name = $1 AND status = 'succeeded' LIMIT 1", workflow
    )
    if row is None:
        raise RuntimeError("no succeeded mission to read for B7")
    return str(row)


async def _b5_run(
    stack: CooStack, profile: Profile, budget: Budget, names: dict[str, str], mode: str, telemetry: dict[str, str]
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
        )
        result["log_level"] = level
        result["telemetry"] = mode
        result["log_bytes_per_mission"] = round((stack.log_bytes() - before) / max(1, result["completed"]), 1)
        return result
    finally:
        await client.close()
        await table.close()


async def _telemetry(stack: CooStack, profile: Profile, budget: Budget, names: dict[str, str], save: Save) -> None:
    """B5: everything on (traces, logs and metrics exported over OTLP/HTTP to a receiver that decodes
    them, JSON logs at INFO) vs everything off (``OTEL_SDK_DISABLED=true``, logs at WARNING), same run."""
    from tests.fakes.otlp import OtlpReceiver

    if not budget.allows(10):
        save("b5", stats.skipped("time budget"))
        return
    runs: dict[str, dict[str, Any]] = {}
    spans = 0
    with OtlpReceiver() as receiver:
        on_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }
        for mode, env in (("on", on_env), ("off", {"OTEL_SDK_DISABLED": "true"})):
            log(f"B5: COO restarted with telemetry {mode}, {profile.b5_missions} missions ...")
            runs[mode] = await _b5_run(stack, profile, budget, names, mode, env)
            _check_alive(stack)
            if mode == "on":
                await asyncio.to_thread(stack.stop)  # flushes the exporters
                spans = len(receiver.spans)
    on, off = runs["on"], runs["off"]
    on["spans_exported"] = spans
    ratio = round(on["items_per_s"] / off["items_per_s"], 3) if off["items_per_s"] else None
    save(
        "b5",
        {
            "note": "'on' = traces, logs and metrics exported over OTLP/HTTP (batch processors) to a receiver "
            "decoding them on the same machine, logs at INFO; 'off' = OTEL_SDK_DISABLED=true, logs at WARNING "
            "(services restarted and warmed up before each run)",
            "on": on,
            "off": off,
            "on_over_off": ratio,
        },
    )
    log(f"B5: telemetry on {on['items_per_s']}/s ({spans} spans exported) vs off {off['items_per_s']}/s")


def run_coo(infra: Infra, profile: Profile, budget: Budget, save: Save) -> None:
    """Start COO, run its workloads, stop it and remove its schema and streams."""
    stack = CooStack(infra)
    save("config", {**stack.config(), "shapes": SHAPES})
    try:
        log("COO: migrating and starting orchestrator, worker, sandbox ...")
        t = time.monotonic()
        stack.migrate()
        stack.start("INFO")
        save("startup_s", round(time.monotonic() - t, 2))
        asyncio.run(_workloads(stack, profile, budget, save))
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
