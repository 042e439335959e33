"""Dependencies, as ``Annotated`` aliases so routes read like sentences.

``CallerDep`` is any valid key (viewer and up: the reads); ``OperatorDep`` and ``AdminDep`` also
require that scope and answer 403 naming it otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.http import ApiError, error_responses
from services.orchestrator.audit import note_caller
from services.orchestrator.auth import Caller, Scope
from services.orchestrator.state import OrchestratorState, state_of

_bearer = HTTPBearer(auto_error=False, description="COO API key")


async def get_state(request: Request) -> OrchestratorState:  # async: a sync dependency costs a thread hop
    return state_of(request)


StateDep = Annotated[OrchestratorState, Depends(get_state)]


async def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'", headers=challenge)
    state = state_of(request)
    caller = await state.keys.authenticate(credentials.credentials)
    if caller is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key (or it has expired)", headers=challenge)
    note_caller(caller)
    if state.rate_limiter.enabled:
        decision = await state.rate_limiter.hit(caller.name)
        if not decision.allowed:
            state.metrics.rate_limited.inc()
            raise ApiError(
                429,
                "rate_limited",
                f"API key '{caller.name}' is over its limit of {decision.limit} requests per minute; "
                f"retry in {decision.retry_after_s}s",
                headers={"Retry-After": str(decision.retry_after_s), "RateLimit-Limit": str(decision.limit)},
            )
    return caller


def require(needed: Scope) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency: the caller, if its key has the ``needed`` scope; 403 naming the scope otherwise."""

    async def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not caller.can(needed):
            raise ApiError(
                403,
                "forbidden",
                f"this needs an API key with the '{needed}' scope; key '{caller.name}' has '{caller.scope}'",
            )
        return caller

    return check


CallerDep = Annotated[Caller, Depends(get_caller)]  # viewer and up
OperatorDep = Annotated[Caller, Depends(require(Scope.OPERATOR))]
AdminDep = Annotated[Caller, Depends(require(Scope.ADMIN))]


# What the OpenAPI document says of these dependencies (a router declares the first for its routes,
# a route behind ``OperatorDep`` / ``AdminDep`` the second, a route with a JSON body the third).
KEY_ERRORS = error_responses(401, 422, 429)  # no valid key; a parameter refused; over the rate limit
SCOPE_ERRORS = error_responses(403)
BODY_ERRORS = error_responses(400)  # a body that is not JSON


def responses(*groups: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``groups`` merged into one ``responses`` argument."""
    return {code: answer for group in groups for code, answer in group.items()}


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId is its function's name (``submit_mission``): stable, unique,
    snake_case, what a generated client calls the method."""
    return route.name
