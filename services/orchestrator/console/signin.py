"""Signing in to the console with an API key, signing out, and ``/`` leading to the console."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.orchestrator.console.session import (
    COOKIE_NAME,
    MAX_AGE_S,
    clean_key,
    new_session,
    safe_next,
    same_origin,
)
from services.orchestrator.console.web import (
    SECURITY_HEADERS,
    SIGN_IN,
    ConsoleError,
    FormDep,
    read_form,
    render,
)
from services.orchestrator.state import state_of

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get(SIGN_IN, response_class=HTMLResponse)
async def sign_in_page(request: Request, next_path: str = Query("", alias="next")) -> HTMLResponse:
    return render(request, "sign_in.html", {"next": safe_next(next_path), "error": None}, operator=None)


@router.post(SIGN_IN, response_model=None)
async def sign_in(request: Request) -> Response:
    if not same_origin(request.headers.get("origin"), request.headers.get("referer"), request.headers.get("host")):
        raise ConsoleError(403, "this sign-in came from another site; it was refused", title="Refused")
    form = await read_form(request)
    target = safe_next(form.get("next"))
    key = clean_key(form.get("api_key", ""))
    if key is None or await state_of(request).keys.authenticate(key) is None:
        message = (
            "Paste an API key."
            if not form.get("api_key", "").strip()
            else "That API key is not valid or was revoked (or it has expired)."
        )
        context = {"next": target, "error": message}
        return render(request, "sign_in.html", context, operator=None, status=401)
    session = new_session(key)
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE_NAME,
        session.cookie_value(),
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/console/sign-out")
async def sign_out(request: Request, _: FormDep) -> RedirectResponse:
    response = RedirectResponse(SIGN_IN, status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response
