"""Claude through the official ``anthropic`` async SDK: one Messages API call per model turn.

The SDK's own retries are off; a failure becomes a typed ``CooError`` and COO's retry policy
decides: 429 → ``LLM_RATE_LIMITED`` (with the server's ``retry-after``), 5xx / 529 / connection
errors → ``LLM_UNAVAILABLE``, timeouts → ``TIMEOUT``, other 4xx → ``VALIDATION`` (not retried).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2

from services.common.errors import CooError, ErrorType
from services.worker.llm.base import (
    ChatRequest,
    Message,
    ModelResponse,
    TextBlock,
    ToolResult,
    ToolUse,
    Usage,
)

_CONNECT_TIMEOUT_S = 10.0


def retry_after_s(headers: httpx2.Headers | None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _block(block: TextBlock | ToolUse | ToolResult) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ToolUse):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": block.content or "(no output)",
        "is_error": block.is_error,
    }


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": [_block(b) for b in message.content]}


def _usage(raw: Any) -> Usage:
    creation = getattr(raw, "cache_creation", None)
    one_hour = getattr(creation, "ephemeral_1h_input_tokens", None) if creation is not None else None
    return Usage(
        input_tokens=raw.input_tokens or 0,
        output_tokens=raw.output_tokens or 0,
        cache_read_tokens=raw.cache_read_input_tokens or 0,
        cache_write_tokens=raw.cache_creation_input_tokens or 0,
        cache_write_1h_tokens=one_hour or 0,
    )


class RateLimited(CooError):
    """429: retry no sooner than the server asked."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(ErrorType.LLM_RATE_LIMITED, message)
        self.retry_after_s = retry_after_s


def classify(exc: Exception, *, timeout_s: float) -> CooError:
    """The ``CooError`` an SDK exception stands for."""
    if isinstance(exc, anthropic.APITimeoutError):
        return CooError(ErrorType.TIMEOUT, f"the Claude API did not answer within {timeout_s:g}s")
    if isinstance(exc, anthropic.APIConnectionError):
        return CooError(ErrorType.LLM_UNAVAILABLE, f"cannot reach the Claude API: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = _error_message(exc)
        if status == 429:
            return RateLimited(f"Claude API rate limit (429): {detail}", retry_after_s(exc.response.headers))
        if status == 408:
            return CooError(ErrorType.TIMEOUT, f"the Claude API timed out the request (408): {detail}")
        if status >= 500:
            what = "overloaded" if status == 529 else "unavailable"
            return CooError(ErrorType.LLM_UNAVAILABLE, f"the Claude API is {what} ({status}): {detail}")
        return CooError(ErrorType.VALIDATION, f"the Claude API refused the request ({status}): {detail}")
    return CooError(ErrorType.LLM_UNAVAILABLE, f"unexpected Claude API failure: {type(exc).__name__}: {exc}")


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return f"{error.get('type', 'error')}: {error['message']}"
    return exc.message


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0)

    async def close(self) -> None:
        await self.client.close()

    async def chat(self, request: ChatRequest) -> ModelResponse:
        timeout_s = min(self.timeout_s, request.timeout_s)
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [_message(m) for m in request.messages],
        }
        if request.system:
            # The system prompt is the same on every turn: cache it.
            params["system"] = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in request.tools
            ]
        try:
            response = await self.client.messages.create(
                **params,
                timeout=httpx2.Timeout(timeout_s, connect=min(_CONNECT_TIMEOUT_S, timeout_s)),
            )
        except anthropic.AnthropicError as exc:
            raise classify(exc, timeout_s=timeout_s) from exc
        content: list[TextBlock | ToolUse] = []
        for block in response.content:
            if block.type == "text":
                content.append(TextBlock(text=block.text))
            elif block.type == "tool_use":
                content.append(ToolUse(id=block.id, name=block.name, input=dict(block.input or {})))
        return ModelResponse(
            content=tuple(content),
            stop_reason=response.stop_reason or "end_turn",
            model=response.model or request.model,
            usage=_usage(response.usage),
        )
