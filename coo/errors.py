"""What the client raises: every failure is a ``CooError``; an error answer of the API is an ``ApiError``."""

from __future__ import annotations

from typing import Any

import httpx


class CooError(Exception):
    """The client could not do what was asked."""


class ApiUnreachable(CooError):
    """No answer from the API (connection refused, timed out, ...)."""


class MissionTimeout(CooError, TimeoutError):
    """A mission was not final by the deadline given to ``wait``."""

    def __init__(self, mission_id: str, status: str, timeout_s: float) -> None:
        super().__init__(f"mission {mission_id} still '{status}' after {timeout_s:g}s")
        self.mission_id = mission_id
        self.status = status


class ApiError(CooError):
    """The API answered an error: ``{"error": {"type", "message", "field"?}}`` with its HTTP status."""

    def __init__(
        self, status: int, type: str, message: str, field: str | None = None, *, method: str = "", path: str = ""
    ) -> None:
        where = f"{method} {path} → " if method else ""
        super().__init__(f"{where}{status}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.method = method
        self.path = path

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error of an answer (read already), from COO's error body or, failing that, its text."""
        error_type, message, field = "http_error", response.text[:500], None
        try:
            body: Any = response.json()
            error = body["error"]
            error_type, message = str(error["type"]), str(error["message"])
            field = error.get("field")
        except (ValueError, KeyError, TypeError):  # not COO's error body (a proxy's page, ...)
            pass
        return cls(
            response.status_code,
            error_type,
            message,
            field,
            method=response.request.method,
            path=response.request.url.path,
        )
