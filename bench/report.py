"""Turning a run's results into JSON on disk, a Markdown section in RESULTS.md, PNG charts, and the
ratios printed at the end. Nothing here measures anything; it only reads the run's dict."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SYSTEM_ORDER = ("coo", "celery", "dbos", "temporal")
COLORS = {"coo": "#d62728", "celery": "#2ca02c", "dbos": "#1f77b4", "temporal": "#9467bd"}
THROUGHPUT_KEYS = (
    ("b1", "items_per_s", "B1 missions/s"),
    ("b2", "steps_per_s", "B2 steps/s"),
    ("b3", "steps_per_s", "B3 steps/s"),
)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def systems(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, results) of every system in the run, COO first."""
    if data.get("coo"):
        yield "coo", data["coo"]
    for name in SYSTEM_ORDER[1:]:
        if name in data.get("peers", {}):
            yield name, data["peers"][name]


def _num(section: Any, key: str) -> float | None:
    if not isinstance(section, dict) or section.get("skipped"):
        return None
    value = section.get(key)
    return float(value) if isinstance(value, int | float) and value == value else None


def ratios(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """COO over each peer: throughput ratios (>1: COO faster) and latency ratios (>1: COO slower)."""
    coo = data.get("coo", {})
    out: dict[str, dict[str, float | None]] = {}
    if not coo:
        return out
    for name, peer in systems(data):
        if name == "coo" or peer.get("skipped"):
            continue
        row: dict[str, float | None] = {}
        for workload, key, _label in THROUGHPUT_KEYS:
            mine, theirs = _num(coo.get(workload), key), _num(peer.get(workload), key)
            row[f"{workload}_{key}"] = round(mine / theirs, 4) if mine and theirs else None
        for q in ("p50_s", "p95_s", "p99_s"):
            mine, theirs = _num(coo.get("b4"), q), _num(peer.get("b4"), q)
            row[f"b4_{q}"] = round(mine / theirs, 4) if mine and theirs else None
        out[name] = row
    return out


def b4_rates(data: dict[str, Any]) -> dict[str, float | None]:
    """The B4 arrival rate each system ran at (its own, or --b4-rate)."""
    out: dict[str, float | None] = {}
    for name, result in systems(data):
        b4 = result.get("b4") if isinstance(result, dict) else None
        out[name] = _num(b4, "target_rate_per_s")
    return out


def charts(data: dict[str, Any], prefix: Path) -> list[Path]:
    """Throughput by system (log scale) and B4's latency CDF, as PNGs next to the JSON."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[Path] = []
    names = [name for name, result in systems(data) if not result.get("skipped")]
    if names:
        fig, axes = plt.subplots(1, len(THROUGHPUT_KEYS), figsize=(4.2 * len(THROUGHPUT_KEYS), 4))
        for ax, (workload, key, label) in zip(axes, THROUGHPUT_KEYS, strict=True):
            values = [_num(dict(systems(data))[n].get(workload), key) or 0.0 for n in names]
            bars = ax.bar(names, values, color=[COLORS.get(n, "#7f7f7f") for n in names])
            ax.set_title(label)
            ax.set_yscale("log")
            positive = [v for v in values if v > 0]
            if positive:
                ax.set_ylim(bottom=min(positive) / 3, top=max(positive) * 2)
            for bar, value in zip(bars, values, strict=True):
                if value > 0:
                    ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
        fig.suptitle(f"Throughput by system ({data['run']['profile']} profile, {data['run']['started_at']})")
        fig.tight_layout()
        path = prefix.parent / f"{prefix.name}-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    curves = [(n, r["b4"]) for n, r in systems(data) if isinstance(r.get("b4"), dict) and r["b4"].get("cdf")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, b4 in curves:
            xs = [p[0] * 1000 for p in b4["cdf"]]
            ys = [p[1] for p in b4["cdf"]]
            label = f"{name} at {b4['target_rate_per_s']:g}/s (p99 {b4['p99_s'] * 1000:.0f} ms)"
            ax.step(xs, ys, where="post", color=COLORS.get(name), label=label)
        ax.set_xscale("log")
        ax.set_xlabel("submit -> succeeded (ms, log scale)")
        ax.set_ylabel("fraction of missions")
        ax.set_title("B4 latency CDF, open loop, each system at its own rate (see legend)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = prefix.parent / f"{prefix.name}-latency-cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _cell_throughput(section: Any, key: str) -> str:
    if not isinstance(section, dict):
        return "-"
    if section.get("skipped"):
        return "skipped"
    text = _fmt(section.get(key))
    flags = []
    if section.get("failed"):
        flags.append(f"{section['failed']} failed")
    if section.get("unfinished"):
        flags.append(f"{section['unfinished']} unfinished")
    if section.get("submit_errors"):
        flags.append(f"{section['submit_errors']} submit errors")
    if section.get("timed_out"):
        flags.append("timed out")
    return text + (f" ({', '.join(flags)})" if flags else "")


def _cell_latency(section: Any) -> str:
    if not isinstance(section, dict):
        return "-"
    if section.get("skipped"):
        return "skipped"
    ms = [section.get(q) for q in ("p50_s", "p95_s", "p99_s")]
    text = " / ".join(_fmt(v * 1000 if isinstance(v, float) else None, 3) for v in ms)
    if section.get("unfinished") or section.get("failed"):
        text += f" ({section.get('completed')}/{section.get('sent')} done)"
    return text


def markdown(data: dict[str, Any], json_path: Path, chart_paths: list[Path]) -> str:
    run = data["run"]
    machine = run["machine"]
    lines = [
        f"## {run['started_at']} — {run['profile']} profile",
        "",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB memory, "
        f"Linux {machine['kernel']}; load average at start {machine['load_avg_at_start']}",
        f"- {run['python']}; run took {run.get('duration_s', '?')} s"
        + ("; **interrupted**" if run.get("interrupted") else ""),
        "- packages: " + ", ".join(f"{k} {v}" for k, v in run["packages"].items()),
    ]
    infra = run.get("infra", {})
    if infra:
        lines.append(
            f"- Postgres {infra.get('postgres_version')} ({infra.get('postgres')}); "
            f"NATS {infra.get('nats_version')} ({infra.get('nats')})"
        )
    for name, result in systems(data):
        if name != "coo" and not result.get("skipped") and result.get("about"):
            lines.append(f"- {name}: {result['about']}")
    lines.append(f"- raw results: `{json_path.relative_to(json_path.parents[2])}`")
    lines += [
        "",
        "| system | B1 missions/s | B2 steps/s (3-step chains) | B3 steps/s (100-step fan-out) "
        "| B4 latency p50 / p95 / p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    skipped: list[str] = []
    for name, result in systems(data):
        if result.get("skipped"):
            skipped.append(f"- **{name} skipped**: {result.get('reason')}")
            lines.append(f"| {name} | skipped | skipped | skipped | skipped |")
            continue
        lines.append(
            f"| {name} | {_cell_throughput(result.get('b1'), 'items_per_s')} "
            f"| {_cell_throughput(result.get('b2'), 'steps_per_s')} "
            f"| {_cell_throughput(result.get('b3'), 'steps_per_s')} | {_cell_latency(result.get('b4'))} |"
        )
        if result.get("error"):
            skipped.append(f"- {name} did not finish cleanly: {str(result['error'])[:300]}")
        for workload in ("b1", "b2", "b3", "b4"):
            section = result.get(workload)
            if isinstance(section, dict) and section.get("skipped"):
                skipped.append(f"- {name} {workload.upper()} skipped: {section.get('reason')}")
    rates = {name: rate for name, rate in b4_rates(data).items() if rate}
    if rates:
        duration = data["run"].get("workloads", {}).get("b4_duration_s")
        how = (
            "the rate given with --b4-rate, for every system"
            if data["run"].get("b4_rate_override_per_s")
            else "each system at 50% of its own B1 rate"
        )
        lines.append("")
        lines.append(
            f"B4: open-loop Poisson arrivals ({how}: "
            + ", ".join(f"{name} {rate:.4g}/s" for name, rate in rates.items())
            + f") for {duration} s, the same seed for every system; latency from the scheduled "
            "arrival to the item's recorded completion."
            + (
                ""
                if data["run"].get("b4_rate_override_per_s")
                else " The B4 ratios below compare latencies at these different rates, each the same fraction "
                "of that system's own capacity."
            )
        )
    fallbacks = {
        key.upper(): section["completion_fallbacks"]
        for key, section in data.get("coo", {}).items()
        if isinstance(section, dict) and isinstance(section.get("completion_fallbacks"), int)
    }
    if fallbacks:
        lines.append("")
        lines.append(
            "COO's completion time: the receipt, by the measuring process, of the mission's terminal timeline "
            "event, which the orchestrator publishes on core NATS after COMMIT (not missions.finished_at, set "
            "before COMMIT); missions whose event was missed fell back to finished_at: "
            + ", ".join(f"{k} {v}" for k, v in fallbacks.items())
            + "."
        )
    lines += ["", *skipped] if skipped else []
    lines += _ratio_lines(data)
    lines += _coo_lines(data)
    if chart_paths:
        lines += ["", "Charts: " + ", ".join(f"`{p.relative_to(p.parents[2])}`" for p in chart_paths)]
    return "\n".join(lines) + "\n"


def _ratio_lines(data: dict[str, Any]) -> list[str]:
    rows = data.get("ratios") or {}
    if not rows:
        return []
    out = [
        "",
        "COO over each peer (throughput: above 1 means COO is faster; latency: above 1 means COO is slower):",
        "",
        "| peer | B1 | B2 | B3 | B4 p50 | B4 p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        out.append(
            f"| {name} | {_fmt(r.get('b1_items_per_s'))} | {_fmt(r.get('b2_steps_per_s'))} "
            f"| {_fmt(r.get('b3_steps_per_s'))} | {_fmt(r.get('b4_p50_s'))} | {_fmt(r.get('b4_p99_s'))} |"
        )
    return out


def _coo_lines(data: dict[str, Any]) -> list[str]:
    coo = data.get("coo", {})
    out: list[str] = []
    for key in ("b5", "b6", "b7"):
        section = coo.get(key)
        if isinstance(section, dict) and section.get("skipped"):
            out += ["", f"COO {key.upper()} skipped: {section.get('reason')}"]
    if coo.get("error"):
        out += ["", f"**COO failed during the run**: {coo['error'][:800]}"]
    b5 = coo.get("b5")
    if isinstance(b5, dict) and not b5.get("skipped") and "on" in b5:
        on, off = b5["on"], b5["off"]
        out += [
            "",
            f"B5 (COO only) — {b5['note']}: on {_fmt(on['items_per_s'])} missions/s "
            f"({on.get('spans_exported', 0)} spans exported, {on['log_bytes_per_mission']} log bytes/mission) vs "
            f"off {_fmt(off['items_per_s'])} missions/s; on/off = {_fmt(b5['on_over_off'])}.",
        ]
    b6 = coo.get("b6")
    if isinstance(b6, dict) and not b6.get("skipped"):
        per = b6["pg_stat_database_per_step"]
        st = b6["statements"]
        out += [
            "",
            f"B6 (COO only, {b6['steps']} one-step missions): per step, pg_stat_database shows "
            f"{_fmt(per['xact_commit'])} commits, {_fmt(per['tup_inserted'])} rows inserted, "
            f"{_fmt(per['tup_updated'])} updated, {_fmt(per['tup_deleted'])} deleted, "
            f"{_fmt(per['tup_fetched'])} fetched, {_fmt(per['tup_returned'])} returned "
            "(net of the harness's own queries and the idle background). "
            f"Statements per step: {_fmt(st.get('statements_per_step'))} ({st.get('source')})"
            + (
                f"; COMMITs per step from the log: {_fmt(st.get('commits_per_step'))}"
                if "commits_per_step" in st
                else ""
            )
            + ".",
        ]
        if st.get("by_service_per_step"):
            out.append(
                "Statements per step by service: "
                + ", ".join(f"{k} {v}" for k, v in st["by_service_per_step"].items())
                + "; by kind: "
                + ", ".join(f"{k} {v}" for k, v in st["by_kind_per_step"].items())
                + "."
            )
        for note in b6.get("notes", []):
            out.append(f"({note})")
    b7 = coo.get("b7")
    if isinstance(b7, dict) and not b7.get("skipped"):
        base_key = str(b7.get("baseline", "fastapi_asyncpg"))
        c, h = b7["coo_get_mission"], b7[base_key]
        out += [
            "",
            f"B7 (same host, {b7['generator']}, {c['connections']} connections, {c['duration_s']} s each): "
            f"COO's `GET /v1/missions/{{id}}` (rate limiter on, per-key limit raised to "
            f"{b7.get('coo_rate_limit_per_minute')}/min so that the load is never refused) "
            f"{_fmt(c.get('requests_per_s'))} req/s (p50 {_fmt(c.get('p50_ms'))} ms, "
            f"p99 {_fmt(c.get('p99_ms'))} ms, non-2xx {c.get('non_2xx')}) vs the baseline, "
            f"{b7.get('baseline_about', base_key)}: {_fmt(h.get('requests_per_s'))} req/s "
            f"(p50 {_fmt(h.get('p50_ms'))} ms, p99 {_fmt(h.get('p99_ms'))} ms, non-2xx {h.get('non_2xx')}); "
            f"COO / FastAPI+asyncpg = {_fmt(b7.get(f'coo_over_{base_key}'))}.",
        ]
    out += _scale_lines(coo.get("scale"))
    b8 = coo.get("b8_rss")
    if isinstance(b8, dict):
        under = b8.get("under_b1", {})
        parts = [
            f"{svc} {b8['idle_mib'].get(svc)} MiB idle"
            + (f", peak {under[svc]['peak_mib']} MiB under B1" if svc in under else "")
            for svc in b8.get("idle_mib", {})
        ]
        out += ["", "B8 (COO RSS): " + "; ".join(parts) + "."]
    return out


def _scale_lines(scale: Any) -> list[str]:
    if not isinstance(scale, dict):
        return []
    shapes = {k: v for k, v in scale.items() if isinstance(v, dict)}
    if not shapes:
        return []
    out = [
        "",
        f"Scale (COO only) — {scale.get('note', '')}. On a 2-core machine this shows contention, not speed-up: "
        "more processes compete for the same two cores (and Postgres and NATS run there too).",
        "",
        "| shape | workers | orchestrators | missions/s | completed |",
        "|---|---|---|---|---|",
    ]
    for key, r in shapes.items():
        if r.get("skipped"):
            out.append(f"| {key} | - | - | skipped ({r.get('reason')}) | - |")
            continue
        out.append(
            f"| {key} | {r.get('workers')} | {r.get('orchestrators')} | {_cell_throughput(r, 'items_per_s')} "
            f"| {r.get('completed')}/{r.get('items')} |"
        )
    return out


def append_markdown(path: Path, data: dict[str, Any], json_path: Path, chart_paths: list[Path]) -> None:
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\n"
            "Appended by `python -m bench` (see `bench/README.md`). Every number comes from a real run on "
            "the machine described in its section; nothing is edited by hand.\n\n"
        )
    with path.open("a") as f:
        f.write("\n" + markdown(data, json_path, chart_paths))


def print_summary(data: dict[str, Any], json_path: Path, chart_paths: list[Path]) -> None:
    out = ["", markdown(data, json_path, chart_paths)]
    rows = data.get("ratios") or {}
    if rows:
        out.append("Ratios, COO / peer:")
        for name, r in rows.items():
            out.append(
                f"  {name:9s} B1 {_fmt(r.get('b1_items_per_s'))}x  B2 {_fmt(r.get('b2_steps_per_s'))}x  "
                f"B3 {_fmt(r.get('b3_steps_per_s'))}x  B4 p50 {_fmt(r.get('b4_p50_s'))}x  "
                f"p99 {_fmt(r.get('b4_p99_s'))}x"
            )
    print("\n".join(out), flush=True)  # noqa: T201
