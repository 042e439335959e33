"""What the schedules, triggers and events commands share: a client whose API errors end the command
with their message, and request bodies read from options (JSON or ``@file``) and from YAML/JSON files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.base import fail
from services.cli.base import load_settings as _settings
from services.cli.client import ApiFailure, CooClient

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        exists=True,
        dir_okay=False,
        help="A YAML or JSON file with the API's fields; options given as well override them.",
    ),
]


@contextmanager
def api() -> Iterator[CooClient]:
    """A client of the API; an error answer ends the command with its message (exit 1)."""
    client = CooClient.from_settings(_settings())
    try:
        yield client
    except ApiFailure as exc:
        fail(str(exc))
    finally:
        client.close()


def json_object(value: str, option: str) -> dict[str, Any]:
    """``value`` as a JSON object: the JSON itself, or ``@path`` of a file holding it (exit 2 otherwise)."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            fail(f"{option}: cannot read {value[1:]}: {exc.strerror or exc}", 2)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not JSON: {exc}", 2)
    if not isinstance(parsed, dict):
        fail(f"{option} must be a JSON object", 2)
    return dict(parsed)


def body_file(path: Path | None) -> dict[str, Any]:
    """The fields of a YAML or JSON file (``.json``: JSON), or none without a file (exit 2 when it is not a mapping)."""
    if path is None:
        return {}
    import yaml

    try:
        text = path.read_text()
        parsed = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: cannot read it: {exc}", 2)
    if not isinstance(parsed, dict):
        fail(f"{path}: must hold a mapping of fields (name: …, workflow: …)", 2)
    return dict(parsed)


def merged(from_file: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The file's fields, overridden by the options given (those not None)."""
    return {**from_file, **{k: v for k, v in options.items() if v is not None}}


def require(body: dict[str, Any], *fields: tuple[str, str]) -> None:
    """Each ``(field, option)`` is in ``body``, from the file or its option (exit 2 naming the option)."""
    missing = [option for field, option in fields if body.get(field) is None]
    if missing:
        fail(f"missing {', '.join(missing)} (or give them in a file with -f)", 2)


def decimal_text(value: str | None, option: str) -> str | None:
    """A decimal number as text (exact, unlike a float), or exit 2 naming the option."""
    if value is None:
        return None
    try:
        return str(Decimal(value))
    except ArithmeticError:
        fail(f"{option}: '{value}' is not a number", 2)
        raise


def cell(value: Any, empty: str = "-") -> str:
    return empty if value is None or value == "" else str(value)
