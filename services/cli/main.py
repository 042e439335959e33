"""The `coo` command."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli import steer
from services.common.settings import Settings, get_settings
from services.common.status import MissionStatus

app = typer.Typer(
    name="coo",
    help="COO: run LLM agent workflows in production, and see and steer everything they do.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
steer.install(app)

SERVICE_NAMES = ("orchestrator", "worker", "sandbox")
DEMO_WORKFLOW = "hello"
DEMO_INPUT = {"text": "COO runs agent workflows.\nEvery step is durable and observable.\n"}


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the variable
        _fail(f"invalid configuration: {exc}")
        raise  # unreachable


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


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations (idempotent)."""
    from services.common.db.migrate import upgrade

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    upgrade(settings, revision)
    typer.echo(f"database at {revision}")


@db_app.command("wait")
def db_wait(
    timeout_s: Annotated[float, typer.Option("--timeout", help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Wait until the database schema is the one this release needs (an init container's job: new pods
    start once the migration Job has run), then exit 0; exit 1 at the deadline, saying what it saw."""
    import asyncio

    from services.common.infra import wait_until_migrated

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    try:
        revision = asyncio.run(wait_until_migrated(settings, timeout_s=timeout_s))
    except TimeoutError as exc:
        _fail(str(exc))
    typer.echo(f"database at {revision}")


@db_app.command("roles")
def db_roles(
    passwords_dir: Annotated[
        Path | None,
        typer.Option(
            "--passwords-dir",
            help="Directory holding orchestrator_db_password, worker_db_password and sandbox_db_password "
            "(default: COO_SECRETS_DIR).",
        ),
    ] = None,
    without_passwords: Annotated[
        bool,
        typer.Option(
            "--without-passwords",
            help="Roles without a password, for a development server whose pg_hba.conf trusts its clients.",
        ),
    ] = False,
) -> None:
    """Create or update one LOGIN role per service (<COO_DB_ROLE_PREFIX><service>) with only the
    privileges its code needs, as the owner of COO's tables (with CREATEROLE) or a superuser.
    Idempotent; every `coo db upgrade` grants again, so run this once, and when a password changes."""
    import asyncio

    from services.common.db.roles import SERVICES, apply_roles, read_passwords, role_name

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    directory = passwords_dir or settings.secrets_dir
    if directory is None and not without_passwords:
        _fail("say where the roles' passwords are: --passwords-dir, or COO_SECRETS_DIR")
    try:
        passwords = None if without_passwords or directory is None else read_passwords(directory)
        changes = asyncio.run(apply_roles(settings, passwords))
    except ValueError as exc:
        _fail(str(exc))
    for service in SERVICES:
        role = role_name(settings.db_role_prefix, service)
        granted = changes.granted.get(role, {})
        revoked = changes.revoked.get(role, {})
        said = [f"+{t}({','.join(sorted(p))})" for t, p in sorted(granted.items())]
        said += [f"-{t}({','.join(sorted(p))})" for t, p in sorted(revoked.items())]
        typer.echo(f"role {role}: " + (" ".join(said) if said else "privileges already as declared"))


def _key_store() -> Any:
    """A sessionmaker on the database (the keys commands work there: they make the first admin key)."""
    from services.common.db.session import create_engine, create_sessionmaker

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    engine = create_engine(settings, application_name="coo-cli")
    return engine, create_sessionmaker(engine)


def _run_on_keys(work: Callable[[Any], Any]) -> Any:
    import asyncio

    async def run() -> Any:
        engine, sessionmaker = _key_store()
        try:
            return await work(sessionmaker)
        finally:
            await engine.dispose()

    return asyncio.run(run())


class KeyScope(enum.StrEnum):
    admin = "admin"
    operator = "operator"
    viewer = "viewer"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (who uses it).")],
    scope: Annotated[
        KeyScope, typer.Option(help="viewer reads; operator also submits and steers; admin does everything.")
    ] = KeyScope.admin,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Days until the key stops working (default: never).")
    ] = None,
) -> None:
    """Create an API key in the database; it is printed once (on stdout) and stored only as a hash."""
    from datetime import UTC, datetime, timedelta

    from services.orchestrator.auth import Scope
    from services.orchestrator.keys import KeyNameTaken, create_key

    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        made = _run_on_keys(lambda sm: create_key(sm, name, Scope(scope.value), expires_at))
    except KeyNameTaken as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"could not store the key: {exc}")
    until = f", expires {made.row.expires_at.isoformat()}" if made.row.expires_at else ""
    typer.echo(f"created {scope.value} key '{name}' ({made.row.id}{until})", err=True)
    typer.echo(made.raw)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List API keys (never the keys themselves): name, scope, expiry, revocation, last use."""
    from services.orchestrator.auth import scope_of
    from services.orchestrator.keys import list_keys

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    try:
        rows = _run_on_keys(list_keys)
    except Exception as exc:
        _fail(f"could not read the keys: {exc}")
    keys = [
        {
            "id": str(r.id),
            "name": r.name,
            "scope": str(scope_of(r.scopes)),
            "created_at": when(r.created_at),
            "expires_at": when(r.expires_at),
            "revoked_at": when(r.revoked_at),
            "last_used_at": when(r.last_used_at),
        }
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    if not keys:
        typer.echo("no API keys in the database (keys of COO_API_KEYS are not listed)")
        return
    typer.echo(f"{'ID':36}  {'NAME':24} {'SCOPE':8} {'STATE':8} {'EXPIRES':25} LAST USED")
    for k in keys:
        state = "revoked" if k["revoked_at"] else "active"
        typer.echo(
            f"{k['id']:36}  {k['name']:24} {k['scope']:8} {state:8} {k['expires_at'] or 'never':25} "
            f"{k['last_used_at'] or '-'}"
        )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke an API key: every orchestrator refuses it from the next request on."""
    from services.orchestrator.keys import find_key, revoke_key

    async def revoke(sessionmaker: Any) -> Any:
        found = await find_key(sessionmaker, key)
        return None if found is None else await revoke_key(sessionmaker, found.id)

    try:
        row = _run_on_keys(revoke)
    except Exception as exc:
        _fail(f"could not revoke the key: {exc}")
    if row is None:
        _fail(f"no API key with id or name '{key}'")
    typer.echo(f"revoked key '{row.name}' ({row.id}) at {row.revoked_at.isoformat()}")


if __name__ == "__main__":
    sys.exit(app())
