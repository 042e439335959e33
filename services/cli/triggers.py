"""`coo triggers …` (missions started by events, once per delivery) and `coo events send` (deliver an
event to the triggers listening for it). Each command is one call of the REST API."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.base import fail
from services.cli.bodies import FileOpt, JsonOpt, api, body_file, cell, decimal_text, json_object, merged, require

triggers_app = typer.Typer(
    help="Event triggers: start a workflow's mission for each event delivered (POST /v1/events or a signed webhook).",
    no_args_is_help=True,
)
events_app = typer.Typer(help="Events: deliver one to the triggers listening for it.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The trigger's name.")]


def _delivery_line(delivery: dict[str, Any]) -> str:
    what = f"mission {delivery['mission_id']}" if delivery.get("mission_id") else ""
    error = f"  {delivery['error']}" if delivery.get("error") else ""
    when = f"{delivery['received_at']}  " if delivery.get("received_at") else ""
    source = f"{delivery['source']:<8} {delivery['delivery_id']:<24} " if delivery.get("delivery_id") else ""
    return f"  {when}{source}{delivery['outcome']:<9} {what}{error}".rstrip()


def _print_trigger(trigger: dict[str, Any]) -> None:
    version = f" v{trigger['version']}" if trigger.get("version") else " (latest version)"
    webhook = f"POST {trigger['webhook_path']} (signed)" if trigger["has_secret"] else "none (no secret)"
    lines = [
        f"trigger   {trigger['name']}",
        f"event     {trigger['event']}",
        f"workflow  {trigger['workflow']}{version}   priority {trigger['priority']}",
        f"input     {json.dumps(trigger['input'])}",
        f"filter    {cell(trigger.get('filter'))}",
        f"webhook   {webhook}",
    ]
    if trigger.get("budget_usd") is not None or trigger.get("budget_tokens") is not None:
        lines.append(f"budget    ${cell(trigger.get('budget_usd'))}, {cell(trigger.get('budget_tokens'))} tokens")
    deliveries = trigger["recent_deliveries"]
    lines.append("recent deliveries:" if deliveries else "recent deliveries: none yet")
    lines += [_delivery_line(delivery) for delivery in deliveries]
    typer.echo("\n".join(lines))


def _secret(secret_file: Path | None, secret_env: str | None) -> str | None:
    """The webhook secret, from a file (its content without the trailing newline) or an environment variable."""
    if secret_file is not None and secret_env is not None:
        fail("give --secret-file or --secret-env, not both", 2)
    if secret_file is not None:
        try:
            return secret_file.read_text().rstrip("\r\n")
        except OSError as exc:
            fail(f"--secret-file: cannot read {secret_file}: {exc.strerror or exc}", 2)
    if secret_env is not None:
        value = os.environ.get(secret_env)
        if not value:
            fail(f"--secret-env: the environment variable {secret_env} is not set", 2)
        return value
    return None


@triggers_app.command("list")
def triggers_list(as_json: JsonOpt = False) -> None:
    """List triggers: event, workflow, webhook, and the latest delivery's outcome."""
    with api() as client:
        triggers = client.triggers()
    if as_json:
        typer.echo(json.dumps(triggers, indent=2))
        return
    if not triggers:
        typer.echo("no triggers")
        return
    typer.echo(f"{'NAME':24} {'EVENT':20} {'WORKFLOW':20} {'WEBHOOK':8} {'FILTER':30} LAST DELIVERY")
    for t in triggers:
        last = t["recent_deliveries"][0] if t["recent_deliveries"] else None
        outcome = f"{last['outcome']} {last['received_at']}" if last else None
        typer.echo(
            f"{t['name']:24} {t['event']:20} {t['workflow']:20} {'yes' if t['has_secret'] else 'no':8} "
            f"{cell(t.get('filter')):30} {cell(outcome)}"
        )


@triggers_app.command("show")
def triggers_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show a trigger (never its secret) and its recent deliveries with their outcome."""
    with api() as client:
        trigger = client.trigger(name)
    if as_json:
        typer.echo(json.dumps(trigger, indent=2))
    else:
        _print_trigger(trigger)


@triggers_app.command("create")
def triggers_create(
    file: FileOpt = None,
    name: Annotated[str | None, typer.Option(help="Name (letters, digits, . _ -).")] = None,
    event: Annotated[str | None, typer.Option(help="The event name it listens for, e.g. push.")] = None,
    workflow: Annotated[str | None, typer.Option(help="The workflow its missions run.")] = None,
    version: Annotated[int | None, typer.Option(help="Workflow version (default: the latest at each event).")] = None,
    input_json: Annotated[
        str | None,
        typer.Option("--input", help="Mission input (JSON, or @file.json); strings may be {{ event.payload… }}."),
    ] = None,
    filter_expr: Annotated[
        str | None, typer.Option("--filter", help="Only events for which it holds: event.payload.ref == 'main'.")
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="File holding the webhook signing secret (at least 16 characters).", dir_okay=False),
    ] = None,
    secret_env: Annotated[
        str | None, typer.Option(help="Or: the environment variable holding the webhook signing secret.")
    ] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first when missions queue.")] = None,
    budget_usd: Annotated[str | None, typer.Option(help="USD budget of each mission, e.g. 0.50.")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Token budget of each mission.")] = None,
) -> None:
    """Create a trigger from options, or from a YAML/JSON file of the API's fields (name, event,
    workflow, input, filter, priority, …) with -f; options given as well override the file's fields.
    The webhook secret is never an option's value, nor in that file (it would end up in shell history
    or a repository): give --secret-file or --secret-env. Without a secret only POST /v1/events reaches it."""
    body = body_file(file)
    if "secret" in body:
        fail(f"{file}: keep the secret out of the file; give --secret-file or --secret-env", 2)
    body = merged(
        body,
        {
            "name": name,
            "event": event,
            "workflow": workflow,
            "version": version,
            "input": json_object(input_json, "--input") if input_json is not None else None,
            "filter": filter_expr,
            "secret": _secret(secret_file, secret_env),
            "priority": priority,
            "budget_usd": decimal_text(budget_usd, "--budget-usd"),
            "budget_tokens": budget_tokens,
        },
    )
    require(body, ("name", "--name"), ("event", "--event"), ("workflow", "--workflow"))
    with api() as client:
        trigger = client.create_trigger(body)
    typer.echo(f"created trigger {trigger['name']}")
    _print_trigger(trigger)


@triggers_app.command("delete")
def triggers_delete(name: NameArg) -> None:
    """Delete a trigger (the missions it started stay)."""
    with api() as client:
        client.delete_trigger(name)
    typer.echo(f"deleted trigger {name}")


@events_app.command("send")
def events_send(
    event: Annotated[str, typer.Argument(help="The event name, e.g. push.")],
    event_id: Annotated[str, typer.Option("--id", help="The delivery's id: the same id again starts nothing.")],
    payload_json: Annotated[str, typer.Option("--payload", help="Payload: a JSON object, or @file.json.")] = "{}",
    as_json: JsonOpt = False,
) -> None:
    """Deliver an event: one mission per trigger listening for it whose filter holds. Prints the
    missions started; the same id again starts nothing and prints the first delivery's missions."""
    payload = json_object(payload_json, "--payload")
    with api() as client:
        accepted = client.send_event(event, event_id, payload)
    if as_json:
        typer.echo(json.dumps(accepted, indent=2))
        return
    missions = accepted["missions"]
    if accepted["duplicate"]:
        typer.echo(f"event {accepted['event']} {accepted['id']}: duplicate: nothing new started")
    elif not accepted["deliveries"]:
        typer.echo(f"event {accepted['event']} {accepted['id']}: no trigger listens for it; nothing started")
    else:
        typer.echo(f"event {accepted['event']} {accepted['id']}: {len(missions)} mission(s) started")
    for delivery in accepted["deliveries"]:
        typer.echo(f"  trigger {delivery['trigger']}:" + _delivery_line(delivery)[1:])
    for mission_id in missions:
        typer.echo(f"mission {mission_id}")
