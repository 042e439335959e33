"""`coo schedules …`: missions started at fire times (a cron expression in a timezone, or every N
seconds). Each command is one call of the REST API (``/v1/schedules``)."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import typer

from services.cli.base import fail
from services.cli.bodies import FileOpt, JsonOpt, api, body_file, cell, decimal_text, json_object, merged, require

schedules_app = typer.Typer(
    help="Schedules: start a workflow's missions at fire times (cron or every N seconds).", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name.")]


class OverlapPolicy(enum.StrEnum):
    skip = "skip"
    buffer_one = "buffer_one"
    allow_all = "allow_all"
    cancel_other = "cancel_other"


def seconds(value: float) -> str:
    """``3600``, ``31622400``, ``1.5`` (never ``3.16224e+07``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def cadence(schedule: dict[str, Any]) -> str:
    """``0 3 * * * (Europe/Paris)`` or ``every 60s``."""
    if schedule.get("cron"):
        return f"{schedule['cron']} ({schedule['timezone']})"
    return f"every {seconds(schedule['interval_s'])}s"


def _fire_line(fire: dict[str, Any]) -> str:
    what = f"mission {fire['mission_id']}" if fire.get("mission_id") else ""
    error = f"  {fire['error']}" if fire.get("error") else ""
    return f"  {fire['fire_time']}  {fire['kind']:<9} {fire['outcome']:<8} {what}{error}".rstrip()


def _print_schedule(schedule: dict[str, Any]) -> None:
    version = f" v{schedule['version']}" if schedule.get("version") else " (latest version)"
    budget = ", ".join(
        part
        for part in (
            f"${schedule['budget_usd']}" if schedule.get("budget_usd") is not None else "",
            f"{schedule['budget_tokens']} tokens" if schedule.get("budget_tokens") is not None else "",
        )
        if part
    )
    lines = [
        f"schedule  {schedule['name']}" + ("  (paused)" if schedule["paused"] else ""),
        f"workflow  {schedule['workflow']}{version}",
        f"cadence   {cadence(schedule)}",
        f"overlap   {schedule['overlap']}   catch-up window {seconds(schedule['catchup_window_s'])}s   "
        f"jitter {seconds(schedule['jitter_s'])}s   priority {schedule['priority']}",
        f"input     {json.dumps(schedule['input'])}",
    ]
    if budget:
        lines.append(f"budget    {budget}")
    if schedule.get("buffered_fire_time"):
        lines.append(f"buffered  {schedule['buffered_fire_time']} (starts when the running mission ends)")
    upcoming = schedule["next_fire_times"]
    lines.append("next fire times:" if upcoming else "next fire times: none (paused)")
    lines += [f"  {moment}" for moment in upcoming]
    fires = schedule["recent_fires"]
    lines.append("recent fires:" if fires else "recent fires: none yet")
    lines += [_fire_line(fire) for fire in fires]
    typer.echo("\n".join(lines))


def _print_fires(answer: dict[str, Any]) -> None:
    fires = answer["fires"]
    if not fires:
        typer.echo(f"schedule {answer['schedule']}: no fire times in that range")
        return
    started = sum(1 for fire in fires if fire.get("mission_id"))
    typer.echo(f"schedule {answer['schedule']}: {len(fires)} fire time(s), {started} mission(s)")
    for fire in fires:
        typer.echo(_fire_line(fire))


@schedules_app.command("list")
def schedules_list(as_json: JsonOpt = False) -> None:
    """List schedules: workflow, cadence, overlap policy, paused, next fire time, last fire's outcome."""
    with api() as client:
        schedules = client.schedules()
    if as_json:
        typer.echo(json.dumps(schedules, indent=2))
        return
    if not schedules:
        typer.echo("no schedules")
        return
    typer.echo(f"{'NAME':24} {'WORKFLOW':20} {'CADENCE':28} {'OVERLAP':12} {'PAUSED':6} {'NEXT FIRE':32} LAST FIRE")
    for s in schedules:
        upcoming = s["next_fire_times"][0] if s["next_fire_times"] else None
        last = s["recent_fires"][0] if s["recent_fires"] else None
        outcome = f"{last['outcome']} {last['fire_time']}" if last else None
        typer.echo(
            f"{s['name']:24} {s['workflow']:20} {cadence(s):28} {s['overlap']:12} "
            f"{'yes' if s['paused'] else 'no':6} {cell(upcoming):32} {cell(outcome)}"
        )


@schedules_app.command("show")
def schedules_show(
    name: NameArg,
    fires: Annotated[int, typer.Option(min=0, max=1000, help="How many recent fires to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Show a schedule: its settings, next five fire times and recent fires with their outcome."""
    with api() as client:
        schedule = client.schedule(name, fires=fires)
    if as_json:
        typer.echo(json.dumps(schedule, indent=2))
    else:
        _print_schedule(schedule)


@schedules_app.command("create")
def schedules_create(
    file: FileOpt = None,
    name: Annotated[str | None, typer.Option(help="Name (letters, digits, . _ -).")] = None,
    workflow: Annotated[str | None, typer.Option(help="The workflow its missions run.")] = None,
    version: Annotated[int | None, typer.Option(help="Workflow version (default: the latest at each fire).")] = None,
    cron: Annotated[str | None, typer.Option(help="Cron expression: 5 fields, or 6 with seconds first.")] = None,
    every: Annotated[float | None, typer.Option(help="Or: every N seconds (epoch-aligned).")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone of the cron expression (default: UTC).")] = None,
    input_json: Annotated[str | None, typer.Option("--input", help="Mission input: JSON, or @file.json.")] = None,
    overlap: Annotated[
        OverlapPolicy | None, typer.Option(help="While the previous mission runs (default: skip).")
    ] = None,
    catchup_window: Annotated[
        float | None, typer.Option(help="Seconds late a missed fire time still fires (default: 3600).")
    ] = None,
    jitter: Annotated[float | None, typer.Option(help="Delay each fire by up to this many seconds.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    priority: Annotated[int | None, typer.Option(help="Higher runs first when missions queue.")] = None,
    budget_usd: Annotated[str | None, typer.Option(help="USD budget of each mission, e.g. 0.50.")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Token budget of each mission.")] = None,
) -> None:
    """Create a schedule from options, or from a YAML/JSON file of the API's fields (name, workflow,
    cron or interval_s, timezone, input, overlap, catchup_window_s, jitter_s, paused, priority, …)
    with -f; options given as well override the file's fields."""
    if cron is not None and every is not None:
        fail("give --cron or --every, not both", 2)
    body = body_file(file)
    if cron is not None:
        body.pop("interval_s", None)
    if every is not None:
        body.pop("cron", None)
    body = merged(
        body,
        {
            "name": name,
            "workflow": workflow,
            "version": version,
            "cron": cron,
            "interval_s": every,
            "timezone": timezone,
            "input": json_object(input_json, "--input") if input_json is not None else None,
            "overlap": overlap.value if overlap is not None else None,
            "catchup_window_s": catchup_window,
            "jitter_s": jitter,
            "paused": True if paused else None,
            "priority": priority,
            "budget_usd": decimal_text(budget_usd, "--budget-usd"),
            "budget_tokens": budget_tokens,
        },
    )
    require(body, ("name", "--name"), ("workflow", "--workflow"))
    if body.get("cron") is None and body.get("interval_s") is None:
        fail("give --cron EXPR or --every SECONDS (or cron / interval_s in a file with -f)", 2)
    with api() as client:
        schedule = client.create_schedule(body)
    typer.echo(f"created schedule {schedule['name']}")
    _print_schedule(schedule)


@schedules_app.command("pause")
def schedules_pause(name: NameArg) -> None:
    """Pause a schedule: nothing fires until it is resumed."""
    with api() as client:
        schedule = client.schedule_action(name, "pause")
    typer.echo(f"schedule {schedule['name']} paused")


@schedules_app.command("resume")
def schedules_resume(name: NameArg) -> None:
    """Resume a schedule from its next fire time after now (missed ones are not caught up)."""
    with api() as client:
        schedule = client.schedule_action(name, "resume")
    upcoming = schedule["next_fire_times"][0] if schedule["next_fire_times"] else None
    typer.echo(f"schedule {schedule['name']} resumed; next fire {cell(upcoming)}")


@schedules_app.command("trigger")
def schedules_trigger(name: NameArg) -> None:
    """Fire a schedule now, by its overlap policy (paused or not); prints the mission started."""
    with api() as client:
        _print_fires(client.schedule_action(name, "trigger"))


@schedules_app.command("backfill")
def schedules_backfill(
    name: NameArg,
    start: Annotated[str, typer.Option(help="First fire time considered: ISO 8601 with an offset.")],
    end: Annotated[str, typer.Option(help="Last fire time considered (inclusive), e.g. 2025-01-02T00:00:00Z.")],
) -> None:
    """Fire every fire time in [start, end], oldest first, by the overlap policy; fire times that
    fired already are shown as they were."""
    with api() as client:
        _print_fires(client.schedule_action(name, "backfill", {"start": start, "end": end}))


@schedules_app.command("delete")
def schedules_delete(name: NameArg) -> None:
    """Delete a schedule (the missions it started stay)."""
    with api() as client:
        client.delete_schedule(name)
    typer.echo(f"deleted schedule {name}")
