"""The ``offline`` model: deterministic, scripted per agent, free, and always labelled ``offline``.

A script reads the agent's input and the conversation so far, and answers as a model would: with
tool calls, then a final JSON message. It drives the same tool loop as a real model. Any other
agent gets one final message at once: a valid instance of its ``output_schema`` derived from the
schema and its input (``schema_instance``), or ``{"echo": <input>}`` when it has no schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson

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
from services.worker.llm.schema_instance import SchemaInstanceError, schema_instance

OFFLINE_MODEL = "offline"

Script = Callable[[ChatRequest], ModelResponse]
_SCRIPTS: dict[str, Script] = {}


def script(agent: str) -> Callable[[Script], Script]:
    """Register the offline behaviour of a built-in agent."""

    def register(fn: Script) -> Script:
        _SCRIPTS[agent] = fn
        return fn

    return register


def has_script(agent: str) -> bool:
    return agent in _SCRIPTS


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters per token."""
    return max(1, (len(text) + 3) // 4)


def tool_use(request: ChatRequest, name: str, tool_input: dict[str, object]) -> ModelResponse:
    turn = sum(1 for m in request.messages if m.role == "assistant")
    digest = hashlib.sha256(f"{request.agent}:{turn}:{name}".encode()).hexdigest()[:20]
    return ModelResponse(
        content=(ToolUse(id=f"toolu_off_{digest}", name=name, input=dict(tool_input)),),
        stop_reason="tool_use",
        model=OFFLINE_MODEL,
    )


def final(output: dict[str, object]) -> ModelResponse:
    return ModelResponse(
        content=(TextBlock(text=orjson.dumps(output).decode()),), stop_reason="end_turn", model=OFFLINE_MODEL
    )


def tool_results(request: ChatRequest) -> list[ToolResult]:
    """Tool results the conversation holds, oldest first."""
    return [
        block
        for message in request.messages
        if message.role == "user"
        for block in message.content
        if isinstance(block, ToolResult)
    ]


def first_user_json(request: ChatRequest) -> dict[str, object]:
    """The agent's input, which the runner sends as the first user message (JSON)."""
    first: Message = request.messages[0]
    for block in first.content:
        if isinstance(block, TextBlock):
            try:
                data = orjson.loads(block.text)
            except orjson.JSONDecodeError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def unscripted(request: ChatRequest) -> ModelResponse:
    """An agent without a script: a valid instance of its ``output_schema`` built from the schema and
    the input, or without a schema its input echoed (``{"echo": input}``)."""
    agent_input = first_user_json(request)
    if request.output_schema is None:
        return final({"echo": agent_input})
    try:
        instance = schema_instance(request.output_schema, agent_input)
    except SchemaInstanceError as exc:
        raise CooError(
            ErrorType.AGENT_CRASH,
            f"the offline model cannot answer agent '{request.agent}': {exc}; "
            "set ANTHROPIC_API_KEY to run it on Claude",
        ) from exc
    return ModelResponse(
        content=(TextBlock(text=orjson.dumps(instance).decode()),), stop_reason="end_turn", model=OFFLINE_MODEL
    )


class OfflineProvider:
    name = OFFLINE_MODEL

    async def close(self) -> None:
        """Nothing to release: no connection, no client."""

    async def chat(self, request: ChatRequest) -> ModelResponse:
        fn = _SCRIPTS.get(request.agent, unscripted)
        response = fn(request)
        prompt = request.system + "".join(
            block.text
            if isinstance(block, TextBlock)
            else block.content
            if isinstance(block, ToolResult)
            else orjson.dumps(block.input).decode()
            for message in request.messages
            for block in message.content
        )
        completion = response.text + "".join(orjson.dumps(u.input).decode() for u in response.tool_uses)
        return ModelResponse(
            content=response.content,
            stop_reason=response.stop_reason,
            model=OFFLINE_MODEL,
            usage=Usage(input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens(completion)),
        )
