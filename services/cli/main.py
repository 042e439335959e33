"""The `coo` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli import steer
from services.cli.admin import db_app, keys_app
from services.cli.agents import agents_app
from services.cli.base import fail as _fail
from services.cli.base import load_settings as _settings
from services.cli.doctor import doctor
from services.cli.schedules import schedules_app
from services.cli.triggers import events_app, triggers_app
from services.common.settings import get_settings
from services.common.status import MissionStatus

app = typer.Typer(
    name="coo",
    help="COO: run LLM agent workflows in production, and see and steer everything they do.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(schedules_app, name="schedules")
app.add_typer(triggers_app, name="triggers")
app.add_typer(events_app, name="events")
app.add_typer(agents_app, name="agents")
app.command("doctor")(doctor)
steer.install(app)

SERVICE_NAMES = ("orchestrator", "worker", "sandbox")
DEMO_WORKFLOW = "hello"
DEMO_INPUT = {"text": "COO runs agent workflows.\nEvery step is durable and observable.\n"}


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="orchestrator | worker | sandbox")],
    port: Annotated[int | None, typer.Option(help="Port (default from COO_<SERVICE>_PORT).")] = None,
) -> None:
    """Run one service (HTTP on its port; health, readiness and metrics)."""
    import uvicorn

    from services.cli.embedded import port_is_free
    from services.common.logging import configure_logging

    if service not in SERVICE_NAMES:
        _fail(f"unknown service '{service}': choose one of {', '.join(SERVICE_NAMES)}", 2)
    settings = _settings()
    configure_logging(service, settings.log_level)
    try:
        settings.require_infra()
    except RuntimeError as exc:
        _fail(str(exc))
    bind_port = port if port is not None else int(getattr(settings, f"{service}_port"))
    if not port_is_free(bind_port, settings.host):
        _fail(f"port {bind_port} is already in use: set COO_{service.upper()}_PORT to another port")
    if service == "orchestrator":
        from services.orchestrator.app import create_app
    elif service == "worker":
        from services.worker.app import create_app
    else:
        from services.sandbox.app import create_app
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=bind_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Run the demo mission once everything is ready.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Where embedded data and logs live (COO_DATA_DIR).")] = None,
    pg_port: Annotated[int | None, typer.Option(help="Port of the embedded Postgres (default: a free one).")] = None,
    nats_port: Annotated[int | None, typer.Option(help="Port of the embedded NATS (default: a free one).")] = None,
) -> None:
    """Start the whole system: embedded Postgres and NATS (unless COO_DATABASE_URL / COO_NATS_URL
    are set), migrations, the three services; then serve until Ctrl-C."""
    import os

    from services.cli.up import Interrupted, Stack, install_stop_signals
    from services.common.db.migrate import upgrade

    settings = _settings()
    directory = (data_dir or settings.data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    stop = install_stop_signals()
    stack = Stack(settings, directory, pg_port=pg_port, nats_port=nats_port, stop_requested=stop)
    code = 0
    try:
        stack.check_ports()
        typer.echo("starting infrastructure ...")
        database_url, nats_url = stack.start_infra()
        os.environ["COO_DATABASE_URL"] = database_url
        os.environ["COO_NATS_URL"] = nats_url
        get_settings.cache_clear()
        stack.check_interrupted()
        typer.echo("migrating the database ...")
        upgrade(get_settings())
        stack.make_roles(get_settings())
        typer.echo("starting orchestrator, worker and sandbox ...")
        stack.start_services(database_url, nats_url)
        stack.wait_ready()
        base = f"http://{settings.host}:{settings.orchestrator_port}"
        if demo:
            os.environ["COO_API_URL"] = base
            _run_demo(base, stack.api_key, timeout_s=120, interrupted=stop.is_set)
            stack.check_interrupted()
        _print_addresses(stack, base, database_url, nats_url)
        while not stop.wait(0.5):
            dead = stack.dead_child()
            if dead is not None:
                typer.secho(
                    f"{dead} stopped unexpectedly; last log lines:\n{stack.log_tail(dead)}",
                    fg="red",
                    err=True,
                )
                code = 1
                break
    except (RuntimeError, OSError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        code = 1
    except Interrupted:
        code = 130
    except _DemoFailed as exc:
        if stop.is_set():
            code = 130
        else:
            typer.secho(f"demo mission failed: {exc}", fg=typer.colors.RED, err=True)
            code = 1
    finally:
        typer.echo("stopping ...")
        stack.stop()
        typer.echo("stopped")
    raise typer.Exit(code)


def _print_addresses(stack: Any, base: str, database_url: str, nats_url: str) -> None:
    s = stack.settings
    lines = [
        "",
        "COO is up.",
        f"  API        {base}/v1   (Authorization: Bearer {stack.api_key})",
        f"  API docs   {base}/docs",
        f"  console    {base}/   (sign in with the API key above)",
        f"  metrics    {base}/metrics  http://{s.host}:{s.worker_port}/metrics  http://{s.host}:{s.sandbox_port}/metrics",
        f"  Postgres   {_without_password(database_url)}"
        + (f"   (embedded; password in {stack.postgres.password_file})" if stack.postgres else ""),
        f"  NATS       {nats_url}" + ("   (embedded)" if stack.nats else ""),
        f"  logs       {stack.data_dir / 'logs'}",
        "",
        f"Try:  {_demo_hint(stack.data_dir)}",
        "Press Ctrl-C to stop.",
    ]
    typer.echo("\n".join(lines))


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _demo_hint(data_dir: Path) -> str:
    """A command that runs another demo mission (the CLI finds the dev key in the data directory)."""
    where = "" if data_dir == Path(".coo").resolve() else f"COO_DATA_DIR={data_dir} "
    return f"{where}{_coo_command()} demo"


def _coo_command() -> str:
    """How to call this CLI from the current directory (it may not be on PATH)."""
    import shutil

    script = Path(sys.executable).parent / "coo"
    if shutil.which("coo") == str(script):
        return "coo"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


class _DemoFailed(Exception):
    pass


def _run_demo(
    base: str, api_key: str | None, *, timeout_s: float, interrupted: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    from services.cli.client import ApiFailure, CooClient

    client = CooClient(base, api_key)
    try:
        if client.get_workflow(DEMO_WORKFLOW) is None:
            client.register_workflow(get_settings().examples_dir / "workflows" / f"{DEMO_WORKFLOW}.yaml")
        accepted = client.submit(DEMO_WORKFLOW, DEMO_INPUT)
        typer.echo(f"demo mission {accepted['id']} submitted ({accepted['status']})")
        mission: dict[str, Any] = client.wait(accepted["id"], timeout_s=timeout_s, interrupted=interrupted)
    except ApiFailure as exc:
        raise _DemoFailed(str(exc)) from exc
    finally:
        client.close()
    typer.echo(f"mission {mission['id']} {mission['status']}")
    if mission["status"] != MissionStatus.SUCCEEDED:
        raise _DemoFailed(json.dumps(mission.get("error")))
    typer.echo("output: " + json.dumps(mission["output"]))
    return mission


@app.command()
def demo(timeout: Annotated[float, typer.Option(help="Seconds to wait for the mission.")] = 120.0) -> None:
    """Run the demo mission against a running COO and print its id and final status."""
    from services.cli.client import resolve_api_key

    settings = _settings()
    try:
        _run_demo(settings.api_url, resolve_api_key(settings), timeout_s=timeout)
    except _DemoFailed as exc:
        _fail(str(exc))


@app.command()
def submit(
    workflow_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Workflow YAML or JSON.")],
    input_json: Annotated[str, typer.Option("--input", help="Mission input as JSON.")] = "{}",
    priority: Annotated[int, typer.Option(help="Higher runs first when missions queue.")] = 0,
    budget_usd: Annotated[float | None, typer.Option(help="USD budget.")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Token budget.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Same key, same mission.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the mission to finish.")] = False,
) -> None:
    """Register a workflow file (a new version) and submit a mission of it."""
    from services.cli.client import ApiFailure, CooClient

    try:
        mission_input = json.loads(input_json)
    except json.JSONDecodeError as exc:
        _fail(f"--input is not JSON: {exc}", 2)
    if not isinstance(mission_input, dict):
        _fail("--input must be a JSON object", 2)
    client = CooClient.from_settings(_settings())
    try:
        workflow = client.register_workflow(workflow_file)
        accepted = client.submit(
            workflow["name"],
            mission_input,
            version=workflow["version"],
            priority=priority,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            idempotency_key=idempotency_key,
        )
        result = client.wait(accepted["id"], timeout_s=3600) if wait else accepted
    except ApiFailure as exc:
        _fail(str(exc))
    finally:
        client.close()
    typer.echo(json.dumps(result, indent=2))


@app.command()
def mission(mission_id: Annotated[str, typer.Argument(help="Mission id.")]) -> None:
    """Show a mission with its steps."""
    from services.cli.client import ApiFailure, CooClient

    client = CooClient.from_settings(_settings())
    try:
        typer.echo(json.dumps(client.mission(mission_id), indent=2))
    except ApiFailure as exc:
        _fail(str(exc))
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(app())
