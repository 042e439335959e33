"""Operator commands: follow a mission, pause / resume / cancel it, decide approvals, and work
the dead-letter queue. Each is one call of the REST API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any

import typer

from services.cli.client import ApiFailure, CooClient
from services.common.settings import get_settings

dlq_app = typer.Typer(help="Dead letters: list them, replay one.", no_args_is_help=True)

MissionArg = Annotated[str, typer.Argument(help="Mission id.")]
StepArg = Annotated[str, typer.Argument(help="Step key (its id in the workflow).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (kept in the timeline).")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@contextmanager
def _client() -> Iterator[CooClient]:
    try:
        settings = get_settings()
    except Exception as exc:
        _fail(f"invalid configuration: {exc}")
        raise
    client = CooClient.from_settings(settings)
    try:
        yield client
    except ApiFailure as exc:
        _fail(str(exc))
    finally:
        client.close()


def _run(call: Callable[[CooClient], Any]) -> None:
    with _client() as client:
        typer.echo(json.dumps(call(client), indent=2))


def pause(mission_id: MissionArg, reason: ReasonOpt = None) -> None:
    """Pause a running mission: nothing more is dispatched until it is resumed."""
    _run(lambda c: c.control(mission_id, "pause", {"reason": reason}))


def resume(
    mission_id: MissionArg,
    add_budget_usd: Annotated[str | None, typer.Option(help="USD to add to the budget, e.g. 0.50.")] = None,
    add_budget_tokens: Annotated[int | None, typer.Option(help="Tokens to add to the budget.")] = None,
) -> None:
    """Resume a paused mission (one paused for its budget needs more budget)."""
    body: dict[str, Any] = {}
    if add_budget_usd is not None:
        try:
            body["add_budget_usd"] = str(Decimal(add_budget_usd))
        except ArithmeticError:
            _fail(f"--add-budget-usd: '{add_budget_usd}' is not a number")
    if add_budget_tokens is not None:
        body["add_budget_tokens"] = add_budget_tokens
    _run(lambda c: c.control(mission_id, "resume", body))


def cancel(mission_id: MissionArg, reason: ReasonOpt = None) -> None:
    """Cancel a mission: its unfinished steps are cancelled."""
    _run(lambda c: c.control(mission_id, "cancel", {"reason": reason}))


def rerun(mission_id: MissionArg) -> None:
    """Run a mission again: a new mission of the same workflow version with the same input."""
    _run(lambda c: c.request("POST", f"/v1/missions/{mission_id}/rerun"))


def approve(mission_id: MissionArg, step: StepArg, reason: ReasonOpt = None) -> None:
    """Approve a step waiting for approval: it is dispatched."""
    _run(lambda c: c.decide(mission_id, step, "approve", reason))


def reject(mission_id: MissionArg, step: StepArg, reason: ReasonOpt = None) -> None:
    """Reject a step waiting for approval: it fails with REJECTED."""
    _run(lambda c: c.decide(mission_id, step, "reject", reason))


def logs(
    mission_id: MissionArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new events until the mission ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a mission's timeline; with --follow, live until the mission is final."""
    with _client() as client:
        events = client.follow(mission_id) if follow else iter(client.timeline(mission_id))
        for event in events:
            typer.echo(json.dumps(event) if as_json else _line(event))


def _line(event: dict[str, Any]) -> str:
    step = f" [{event['step_key']}]" if event.get("step_key") else ""
    data = event.get("data") or {}
    detail = " ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in data.items())
    return f"{event.get('ts', '')}  {event.get('type', '')}{step}  {detail}".rstrip()


@dlq_app.command("list")
def dlq_list(
    mission_id: Annotated[str | None, typer.Option("--mission", help="Only this mission's.")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only those not replayed yet.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List dead letters, newest first."""
    with _client() as client:
        page = client.dead_letters(mission_id=mission_id, replayed=False if pending else None, limit=limit)
        for item in page["items"]:
            where = f"mission {item['mission_id']} step {item['step_key']}" if item["mission_id"] else item["subject"]
            state = f"replayed {item['replayed_at']}" if item["replayed_at"] else "pending"
            typer.echo(
                f"{item['id']}  {item['first_failed_at']}  {item['error_type']:<20} attempts={item['attempts']}  "
                f"{where}  ({state})\n    {item['error']}"
            )
        if not page["items"]:
            typer.echo("no dead letters")


@dlq_app.command("replay")
def dlq_replay(dead_letter_id: Annotated[str, typer.Argument(help="Dead letter id.")]) -> None:
    """Replay a dead letter: a new attempt of its step (its mission revives), or its message again."""
    _run(lambda c: c.replay(dead_letter_id))


def install(app: typer.Typer) -> None:
    for command in (pause, resume, cancel, rerun, approve, reject, logs):
        app.command()(command)
    app.add_typer(dlq_app, name="dlq")
