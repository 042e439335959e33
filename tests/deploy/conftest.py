"""Shared readers for the deploy tests: the compose file as compose would interpolate it, the
kustomize overlays as `kubectl kustomize` renders them, and the CLI commands the image offers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")
COO_IMAGE = "coo"

_VAR = re.compile(
    r"\$(?:\$"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if unset_or_empty else str(current)
        if op in ("?", ":?"):
            if unset_or_empty:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return str(current)
        return "" if current is None else current

    return _VAR.sub(substitute, value)


def env_example() -> dict[str, str]:
    """The assignments of deploy/.env.example, commented-out ones included (``KEY=value``)."""
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def filled_env() -> dict[str, str]:
    """The environment of a user who copied .env.example and filled in its secrets."""
    env: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            env[match.group(1)] = match.group(2) or f"filled-{match.group(1).lower()}"
    return env


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return {key: value for key, value in interpolate(raw, env).items() if not key.startswith("x-")}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose(filled_env())


def kubectl() -> str | None:
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def kustomize(directory: Path) -> list[dict[str, Any]]:
    binary = kubectl()
    if binary is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl): cannot render the kustomize overlays")
    command = [binary, "kustomize", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects as `kubectl kustomize` renders them."""
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def coo_help(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``coo <args> --help`` with the installed CLI: a command the image's ENTRYPOINT really has."""
    coo = Path(sys.executable).parent / "coo"
    return subprocess.run([str(coo), *args, "--help"], capture_output=True, text=True, timeout=60, check=False)


def assert_real_command(args: list[str]) -> None:
    """``args`` (what follows the image's ``coo`` entrypoint) is a command the CLI accepts."""
    options = [arg for arg in args if not arg.startswith("-")]
    done = coo_help(options)
    assert done.returncode == 0, f"`coo {' '.join(options)} --help` failed: {done.stderr or done.stdout}"
    if options[:1] == ["serve"]:
        assert len(options) == 2, f"`coo serve` needs exactly one service, got {options}"
        assert options[1] in {"orchestrator", "worker", "sandbox"}, f"unknown service in `coo {' '.join(options)}`"
