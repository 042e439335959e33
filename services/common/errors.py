"""Typed errors that cross process boundaries."""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    AGENT_CRASH = "AGENT_CRASH"
    LLM_RATE_LIMITED = "LLM_RATE_LIMITED"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"
    SANDBOX_FAILED = "SANDBOX_FAILED"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    REJECTED = "REJECTED"
    VALIDATION = "VALIDATION"
    INTERNAL = "INTERNAL"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        ErrorType.AGENT_CRASH,
        ErrorType.LLM_RATE_LIMITED,
        ErrorType.LLM_UNAVAILABLE,
        ErrorType.TIMEOUT,
        ErrorType.SANDBOX_UNAVAILABLE,
        ErrorType.SANDBOX_FAILED,
        ErrorType.INTERNAL,
    }
)


class CooError(Exception):
    """An error with an ErrorType, safe to send to another process."""

    def __init__(self, error_type: ErrorType, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.detail = detail
