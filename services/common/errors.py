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
    # A step's checks still failing when its iterations ran out, by the failing check's kind.
    TEST_FAILED = "TEST_FAILED"
    LINT_FAILED = "LINT_FAILED"
    TYPECHECK_FAILED = "TYPECHECK_FAILED"
    BUILD_FAILED = "BUILD_FAILED"
    # GitHub refused or could not take a pull request (retryable for 429 and 5xx: see StepError.retryable).
    GITHUB_FAILED = "GITHUB_FAILED"
    # An MCP server an agent lists did not answer when the attempt began (refused, timed out, HTTP error).
    TOOL_UNAVAILABLE = "TOOL_UNAVAILABLE"

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
        ErrorType.GITHUB_FAILED,
        ErrorType.TOOL_UNAVAILABLE,
    }
)


class CooError(Exception):
    """An error with an ErrorType, safe to send to another process."""

    def __init__(
        self, error_type: ErrorType, message: str, *, detail: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.detail = detail
        self.retryable = retryable  # None: the type's own policy
