"""A local HTTP server that speaks the Anthropic Messages API (``POST /v1/messages``), for the real
``anthropic`` SDK to talk to in tests.

Replies are scripted: ``queue(...)`` appends replies served in order; when the queue is empty the
``fallback`` answers (by default: an error saying the script ran out). Every request is recorded
with its headers and JSON body.

    fake = FakeAnthropic()
    fake.queue(tool_use("run_command", {"argv": ["wc", "-l"]}), text('{"ok": true}'))
    server = RunningApp(fake.app(), port)  # tests/conftest.py
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_ids = itertools.count(1)


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long (or until the fake is closed) before answering


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        return [
            block
            for message in self.body.get("messages", [])
            if message["role"] == "user" and isinstance(message["content"], list)
            for block in message["content"]
            if block.get("type") == "tool_result"
        ]


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    *,
    cache_write: int = 0,
    cache_read: int = 0,
    cache_write_1h: int = 0,
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write - cache_write_1h,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
    }


def message(content: list[dict[str, Any]], stop_reason: str, *, model: str | None = None, **use: Any) -> Reply:
    return Reply(
        body={
            "id": f"msg_fake_{next(_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": model,  # None: echo the requested model
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage(**use),
        }
    )


def text(value: str, **kwargs: Any) -> Reply:
    return message([{"type": "text", "text": value}], "end_turn", **kwargs)


def tool_use(name: str, tool_input: dict[str, Any], *, preface: str | None = None, **kwargs: Any) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": preface}] if preface else []
    content.append({"type": "tool_use", "id": f"toolu_fake_{next(_ids):06d}", "name": name, "input": tool_input})
    return message(content, "tool_use", **kwargs)


def error(status: int, error_type: str, text_: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status=status,
        body={"type": "error", "error": {"type": error_type, "message": text_}},
        headers={"request-id": f"req_fake_{next(_ids):06d}", **(headers or {})},
    )


def rate_limited(retry_after_s: float) -> Reply:
    return error(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
        {"retry-after": f"{retry_after_s:g}"},
    )


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded")


def hang(seconds: float = 60.0) -> Reply:
    """Answer only after ``seconds`` (past any sensible client timeout), or when the fake closes."""
    return Reply(delay_s=seconds, body=text("too late").body)


class FakeAnthropic:
    def __init__(self, fallback: Callable[[Received], Reply] | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self.fallback = fallback or (lambda _r: error(500, "api_error", "the fake's script ran out of replies"))
        self._closed = asyncio.Event()

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @staticmethod
    def api_key(received: Received) -> str | None:
        """The key a request carried (the SDK sends ``x-api-key`` or ``Authorization: Bearer``)."""
        if received.headers.get("x-api-key"):
            return received.headers["x-api-key"]
        scheme, _, value = received.headers.get("authorization", "").partition(" ")
        return value or None if scheme.lower() == "bearer" else None

    def close(self) -> None:
        """Release every hanging request (call before stopping the server)."""
        self._closed.set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/messages")
        async def messages(request: Request) -> JSONResponse:
            body = await request.json()
            received = Received(headers=dict(request.headers), body=body)
            self.received.append(received)
            if self.api_key(received) is None:
                reply = error(401, "authentication_error", "an x-api-key or Authorization: Bearer header is required")
            else:
                reply = self.replies.popleft() if self.replies else self.fallback(received)
            if reply.delay_s:
                try:
                    await asyncio.wait_for(self._closed.wait(), timeout=reply.delay_s)
                except TimeoutError:
                    pass
            content = dict(reply.body)
            if reply.status == 200 and content.get("model") is None:
                content["model"] = body.get("model")
            return JSONResponse(content, status_code=reply.status, headers=reply.headers)

        return app


# The model the tests' agents name (any priced model would do).
MODEL = "claude-sonnet-4-6"
