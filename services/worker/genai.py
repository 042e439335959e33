"""Spans of an agent attempt, after the OpenTelemetry GenAI semantic conventions: ``chat {model}``
per model call and ``execute_tool {name}`` per tool call. Prompts, completions and tool
arguments/results go on them only with ``COO_CAPTURE_CONTENT=true``, scrubbed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context

from services.common.errors import CooError
from services.common.scrub import scrub, scrub_text
from services.common.status import ToolCallStatus
from services.common.telemetry import Span, SpanKind, StatusCode, tracer
from services.worker.llm.base import ChatRequest, Message, ModelResponse, TextBlock, ToolResult, ToolUse
from services.worker.tools import ToolCall


def _json(value: Any) -> str:
    return orjson.dumps(scrub(value)).decode()


def _parts(blocks: Sequence[TextBlock | ToolUse | ToolResult]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "content": block.text})
        elif isinstance(block, ToolUse):
            parts.append({"type": "tool_call", "id": block.id, "name": block.name, "arguments": block.input})
        else:
            parts.append({"type": "tool_call_response", "id": block.tool_use_id, "response": block.content})
    return parts


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [{"role": m.role, "parts": _parts(m.content)} for m in messages]


@contextmanager
def chat_span(request: ChatRequest, *, provider: str, model: str, capture: bool) -> Iterator[Span]:
    """The span of one model call; an exception leaving it marks it failed with its ``error.type``."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": request.max_tokens,
        "gen_ai.agent.name": request.agent,
    }
    if capture:
        attributes["gen_ai.system_instructions"] = _json([{"type": "text", "content": request.system}])
        attributes["gen_ai.input.messages"] = _json(_messages(request.messages))
    with tracer().start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield span
        except CooError as exc:
            span.set_attribute("error.type", str(exc.error_type))
            span.set_status(StatusCode.ERROR, scrub_text(exc.message))
            raise
        except TimeoutError:
            span.set_attribute("error.type", "TIMEOUT")
            span.set_status(StatusCode.ERROR, "model call timed out")
            raise


def record_response(span: Span, response: ModelResponse, *, model: str, capture: bool) -> None:
    usage = response.usage
    span.set_attributes(
        {
            "gen_ai.response.model": model,
            "gen_ai.response.finish_reasons": [response.stop_reason],
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
        }
    )
    if capture:
        output = [{"role": "assistant", "parts": _parts(response.content), "finish_reason": response.stop_reason}]
        span.set_attribute("gen_ai.output.messages", _json(output))


@contextmanager
def tool_span(use: ToolUse, *, parent: Span, capture: bool) -> Iterator[Span]:
    """The span of one tool call, a child of the model call that asked for it."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": use.name,
        "gen_ai.tool.call.id": use.id,
        "gen_ai.tool.type": "function",
    }
    if capture:
        attributes["gen_ai.tool.call.arguments"] = _json(use.input)
    context: Context = trace.set_span_in_context(parent)
    with tracer().start_as_current_span(f"execute_tool {use.name}", context=context, attributes=attributes) as span:
        yield span


def record_tool(span: Span, call: ToolCall, *, capture: bool) -> None:
    span.set_attribute("coo.tool.status", call.status)
    if call.server is not None:  # a tool of an MCP server (no semantic convention names the server or its tool)
        span.set_attributes(
            {"mcp.method.name": "tools/call", "coo.mcp.server": call.server, "coo.mcp.tool": call.tool or ""}
        )
    if call.exit_code is not None:
        span.set_attribute("coo.tool.exit_code", call.exit_code)
    if call.status != ToolCallStatus.OK:
        span.set_attribute("error.type", call.status)
        span.set_status(StatusCode.ERROR, f"tool {call.name}: {call.status}")
    if capture:
        span.set_attribute("gen_ai.tool.call.result", scrub_text(call.output))
