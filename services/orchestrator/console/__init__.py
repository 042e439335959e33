"""The web console: server-rendered pages (Jinja2 templates, htmx) served by the orchestrator at
``/console`` (``/`` leads there), signed in with an API key, kept live by polling."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.orchestrator.console import actions, automation, catalog, editor, missions, signin
from services.orchestrator.console.web import (
    HERE,
    ConsoleError,
    SignInRequired,
    on_console_error,
    on_sign_in_required,
)


def install_console(app: FastAPI) -> None:
    """Add the console's routes (left out of the OpenAPI schema), its static files and error pages."""
    # the editor before the catalog: /console/workflows/new is not a workflow named "new"
    for module in (signin, missions, actions, editor, catalog, automation):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(ConsoleError, on_console_error)
