"""The console's plumbing: templates, who is signed in, CSRF-checked forms, and how its errors are shown."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from services.common.status import MissionStatus, StepStatus
from services.orchestrator.audit import note_caller
from services.orchestrator.auth import Caller, Scope
from services.orchestrator.console import views
from services.orchestrator.console.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    ConsoleSession,
    csrf_valid,
    read_session,
    same_origin,
)
from services.orchestrator.errors import OrchestratorError, as_api_error
from services.orchestrator.reads import overview
from services.orchestrator.state import state_of

HERE = Path(__file__).parent
SIGN_IN = "/console/sign-in"
MAX_FORM_BYTES = 256 * 1024

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(views.FILTERS)
templates.env.tests["http_url"] = views.http_url
templates.env.globals["sign_in_path"] = SIGN_IN
templates.env.globals["percent"] = views.percent
# the shared statuses, so that templates compare with MissionStatus.PAUSED, not "paused"
templates.env.globals.update(MissionStatus=MissionStatus, StepStatus=StepStatus)

# What the console's pages may load and where their forms may go: this origin only, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, partials answer 401."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


class ConsoleError(Exception):
    """An error a console page or action shows to the operator, with its HTTP status."""

    def __init__(self, status: int, message: str, *, title: str = "Something went wrong") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the API key's caller and the session that holds it."""

    caller: Caller
    session: ConsoleSession

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def can_act(self) -> bool:
        """Whether the key may steer (operator and up); pages show a viewer no action forms."""
        return self.caller.can(Scope.OPERATOR)

    @property
    def can_define(self) -> bool:
        """Whether the key may change workflows and agents (admin); pages show others no edit links."""
        return self.caller.can(Scope.ADMIN)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def wanted_path(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


async def current_operator(request: Request) -> Operator:
    session = read_session(request.cookies.get(COOKIE_NAME))
    caller = await state_of(request).keys.authenticate(session.key) if session is not None else None
    if session is None or caller is None:
        raise SignInRequired(wanted_path(request))
    note_caller(caller)
    return Operator(caller=caller, session=session)


OperatorDep = Annotated[Operator, Depends(current_operator)]


def _not_allowed(operator: Operator, needed: Scope) -> ConsoleError:
    return ConsoleError(
        403,
        f"API key '{operator.caller.name}' has the '{operator.caller.scope}' scope: "
        f"this action needs the '{needed}' scope.",
        title="Not allowed",
    )


async def acting_operator(operator: OperatorDep) -> Operator:
    """The signed-in operator, if their key may act (operator scope and up); a 403 page otherwise."""
    if not operator.can_act:
        raise _not_allowed(operator, Scope.OPERATOR)
    return operator


ActorDep = Annotated[Operator, Depends(acting_operator)]


async def defining_operator(operator: OperatorDep) -> Operator:
    """The signed-in operator, if their key may change workflows and agents (admin, as in the REST
    API); a 403 page otherwise."""
    if not operator.can_define:
        raise _not_allowed(operator, Scope.ADMIN)
    return operator


DefinerDep = Annotated[Operator, Depends(defining_operator)]


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated field wins)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # read no more than the cap, whatever Content-Length says
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ConsoleError(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConsoleError(400, f"the form could not be read: {exc}") from exc
    return dict(pairs)


async def checked_form(request: Request, operator: OperatorDep) -> dict[str, str]:
    """The form of a POST from this console's own pages: same origin and this session's CSRF token."""
    if not same_origin(request.headers.get("origin"), request.headers.get("referer"), request.headers.get("host")):
        raise ConsoleError(403, "this request came from another site; it was refused", title="Refused")
    form = await read_form(request)
    if not csrf_valid(operator.session, request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)):
        raise ConsoleError(
            403, "the form's security token is missing or stale: reload the page and try again", title="Refused"
        )
    return form


FormDep = Annotated[dict[str, str], Depends(checked_form)]


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    operator: Operator | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    state = state_of(request)
    full = {
        "operator": operator,
        "settings": state.settings,
        "path": request.url.path,
        "now": datetime.now(UTC),
        **context,
    }
    response = templates.TemplateResponse(
        request, template, full, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )
    return response


async def render_page(
    request: Request, template: str, context: dict[str, Any], *, operator: Operator | None, status: int = 200
) -> HTMLResponse:
    """A whole page: ``render`` plus what the navigation points out (dead letters, alerts firing)."""
    attention = await overview.attention(state_of(request)) if operator is not None else None
    return render(request, template, {**context, "attention": attention}, operator=operator, status=status)


def flash(
    request: Request, operator: Operator | None, message: str, *, ok: bool, status: int = 200, refresh: bool = False
) -> HTMLResponse:
    """The answer to an htmx action: a message for the page's flash area (and a refresh of its live parts)."""
    headers = {"HX-Trigger": "coo-refresh"} if refresh else None
    return render(
        request, "_flash.html", {"message": message, "ok": ok}, operator=operator, status=status, headers=headers
    )


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise ConsoleError(404, f"{what} '{value}' not found: not an id", title="Not found") from exc


def refusal_page(refused: OrchestratorError) -> ConsoleError:
    """A refusal of a read or command, for a console page."""
    exc = as_api_error(refused)
    titles = {403: "Not allowed", 404: "Not found", 409: "Not allowed now", 422: "Invalid input"}
    return ConsoleError(exc.status_code, exc.message, title=titles.get(exc.status_code, "Something went wrong"))


async def on_sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = f"{SIGN_IN}?next={quote(exc.next_path, safe='')}"
    if is_htmx(request):
        return Response(
            "sign in first",
            status_code=401,
            headers={"HX-Redirect": target, **SECURITY_HEADERS},
            media_type="text/plain",
        )
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)


async def on_console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    operator = None
    try:
        operator = await current_operator(request)
    except SignInRequired:
        operator = None
    if is_htmx(request):
        return flash(request, operator, exc.message, ok=False, status=exc.status)
    context = {"title": exc.title, "message": exc.message}
    return await render_page(request, "error.html", context, operator=operator, status=exc.status)
