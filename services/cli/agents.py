"""`coo agents …`: the agent registry as files. ``apply`` creates or updates agents from YAML (or
JSON) files as ``examples/agents/*.yaml`` hold them, ``list`` shows the registry and ``get`` prints
one agent as a file ``apply`` takes back. Each command goes through the REST API (``/v1/agents``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from services.cli.base import fail
from services.cli.bodies import JsonOpt, api, cell
from services.cli.client import ApiFailure, CooClient

agents_app = typer.Typer(help="Agents: apply them from files, list them, print one as a file.", no_args_is_help=True)

# What ``PUT /v1/agents/{name}`` stores for a field a file leaves out.
SPEC_DEFAULTS: dict[str, Any] = {
    "description": "",
    "system_prompt": "",
    "tools": [],
    "approval_policy": "auto",
    "output_schema": None,
    "mcp_servers": [],
    "enabled": True,
}
_NOT_SPEC = ("name", "version", "created_at", "updated_at")
_SUFFIXES = (".yaml", ".yml", ".json")


class AgentFileError(ValueError):
    """A file that names no agent or cannot be read; the message names the file and the field."""


def _request(client: CooClient, method: str, path: str, **kwargs: Any) -> Any:
    """One call through the client's generic request method (``request`` on the ``coo.client`` based
    client, ``_call`` before it)."""
    for attribute in ("request", "_call"):
        send = getattr(client, attribute, None)
        if callable(send):
            return send(method, path, **kwargs)
    raise RuntimeError("the API client has no generic request method")


def _agent_or_none(client: CooClient, name: str) -> dict[str, Any] | None:
    try:
        answer: dict[str, Any] = _request(client, "GET", f"/v1/agents/{name}")
    except ApiFailure as exc:
        if "→ 404" in str(exc):
            return None
        raise
    return answer


def agent_files(paths: list[Path]) -> list[Path]:
    """The files named, and the agent files (``*.yaml``, ``*.yml``, ``*.json``) of the directories named."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
        else:
            files.append(path)
    return files


def read_agent_file(path: Path) -> dict[str, Any]:
    """The fields of an agent file, or ``AgentFileError`` (the API checks the fields themselves)."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise AgentFileError(f"{path}: file: cannot read it: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentFileError(f"{path}: file: must hold a mapping of fields (name: …, model: …)")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise AgentFileError(f"{path}: name: is required (the agent's name)")
    return dict(data)


def changed_fields(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """The fields an apply of ``wanted`` changes in ``stored`` (a field the file leaves out takes its
    default); fields the API does not know are listed too, for the API to refuse them."""
    if stored is None:
        return sorted(set(wanted) - {"name"})
    fields = [f for f in stored if f not in _NOT_SPEC]
    changed = [f for f in fields if wanted.get(f, SPEC_DEFAULTS.get(f)) != stored[f]]
    return changed + sorted(set(wanted) - set(fields) - {"name"})


def apply_file(client: CooClient, path: Path) -> str:
    """Create or update the agent of one file; what happened (``<name>: created`` …)."""
    wanted = read_agent_file(path)
    name = wanted["name"]
    stored = _agent_or_none(client, name)
    fields = changed_fields(stored, wanted)
    if stored is not None and not fields:
        return f"{name}: unchanged (version {stored['version']})"
    try:
        answer = _request(client, "PUT", f"/v1/agents/{name}", json=wanted)
    except ApiFailure as exc:
        raise AgentFileError(f"{path}: {_api_message(exc)}") from exc
    if stored is None:
        return f"{name}: created (version {answer['version']})"
    return f"{name}: updated: {', '.join(fields)} (version {answer['version']})"


def _api_message(exc: ApiFailure) -> str:
    """The API's message (``<field>: <what is wrong>``) without the request it answered."""
    text = str(exc)
    return text.split(": ", 1)[1] if " → " in text.split(": ", 1)[0] else text


@agents_app.command("apply")
def agents_apply(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="Agent files (YAML or JSON), or directories of them.")
    ],
) -> None:
    """Create or update agents from files; print per agent created, updated (which fields) or
    unchanged. A bad file is named with its field after the others are applied (exit 1)."""
    files = agent_files(paths)
    if not files:
        fail("no agent files (*.yaml, *.yml, *.json) there", 2)
    failures = 0
    with api() as client:
        for path in files:
            try:
                typer.echo(apply_file(client, path))
            except AgentFileError as exc:
                failures += 1
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    if failures:
        raise typer.Exit(1)


@agents_app.command("list")
def agents_list(as_json: JsonOpt = False) -> None:
    """List agents: model, version, tools, approval policy, enabled."""
    with api() as client:
        agents: list[dict[str, Any]] = _request(client, "GET", "/v1/agents")
    if as_json:
        typer.echo(json.dumps(agents, indent=2))
        return
    if not agents:
        typer.echo("no agents")
        return
    typer.echo(f"{'NAME':24} {'MODEL':22} {'VERSION':>7}  {'APPROVAL':17} {'ENABLED':7} TOOLS")
    for a in agents:
        typer.echo(
            f"{a['name']:24} {a['model']:22} {a['version']:>7}  {a['approval_policy']:17} "
            f"{'yes' if a['enabled'] else 'no':7} {cell(', '.join(a['tools']))}"
        )


@agents_app.command("get")
def agents_get(name: Annotated[str, typer.Argument(help="The agent's name.")], as_json: JsonOpt = False) -> None:
    """Print one agent as YAML that `coo agents apply` takes back (its version as a comment)."""
    with api() as client:
        agent: dict[str, Any] = _request(client, "GET", f"/v1/agents/{name}")
    if as_json:
        typer.echo(json.dumps(agent, indent=2))
        return
    spec = {"name": agent["name"], **{k: v for k, v in agent.items() if k not in _NOT_SPEC}}
    typer.echo(f"# version {agent['version']}, updated {agent['updated_at']}")
    typer.echo(yaml.dump(spec, Dumper=_FileDumper, sort_keys=False, allow_unicode=True, width=100).rstrip())


class _FileDumper(yaml.SafeDumper):
    """YAML as agent files are written: a multi-line text (a system prompt) as a ``|`` block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_FileDumper.add_representer(str, _text)
