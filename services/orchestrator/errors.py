"""What the orchestrator refuses, and how its faces answer it.

Reads, commands and the engine raise ``NotFound``, ``Conflict`` or ``InvalidInput`` with a message
and, where one is to blame, the input field; they know nothing of HTTP. The REST API and the
console turn them into an answer here, in one table.
"""

from __future__ import annotations

from services.common.http import ApiError


class OrchestratorError(Exception):
    """A request the orchestrator refuses: ``message`` says why, ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(OrchestratorError):
    """What the request names does not exist."""


class Conflict(OrchestratorError):
    """Not legal in the current state (an illegal transition, a replay already done)."""


class InvalidInput(OrchestratorError):
    """The input itself cannot be accepted (a budget too large to store, a missing step key)."""


_ANSWERS: dict[type[OrchestratorError], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    InvalidInput: (422, "validation"),
}


def as_api_error(exc: OrchestratorError) -> ApiError:
    """The HTTP answer to ``exc``: 404, 409 or 422 with COO's error body."""
    status, error_type = next((answer for kind, answer in _ANSWERS.items() if isinstance(exc, kind)), (409, "conflict"))
    return ApiError(status, error_type, exc.message, field=exc.field)
