"""What every `coo` command shares: failing with a clear message, and settings read or refused."""

from __future__ import annotations

import typer

from services.common.settings import Settings, get_settings


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the variable
        fail(f"invalid configuration: {exc}")
        raise  # unreachable
