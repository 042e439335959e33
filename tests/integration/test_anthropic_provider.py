"""The Claude provider through the real anthropic SDK against a local server speaking the Messages API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from services.cli.embedded import free_port
from services.common.errors import CooError, ErrorType
from services.worker.llm.anthropic import AnthropicProvider
from services.worker.llm.base import ChatRequest, Message, TextBlock, ToolResult, ToolSpec, ToolUse
from tests.conftest import RunningApp
from tests.fakes.anthropic import FakeAnthropic, error, hang, overloaded, rate_limited, text, tool_use

TOOL = ToolSpec(name="run_command", description="Run a program.", input_schema={"type": "object"})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    server = RunningApp(fake.app(), free_port())
    await server.start()
    try:
        yield fake, server.url
    finally:
        fake.close()
        await server.stop()


def request(*messages: Message, timeout_s: float = 30.0) -> ChatRequest:
    return ChatRequest(
        agent="line-counter",
        model="claude-sonnet-4-6",
        system="You count lines.",
        messages=messages or (Message(role="user", content=(TextBlock(text='{"text": "a"}'),)),),
        tools=(TOOL,),
        timeout_s=timeout_s,
    )


async def test_tool_use_round_trip_and_usage_with_cache_tokens(fake: tuple[FakeAnthropic, str]) -> None:
    server, url = fake
    server.queue(
        tool_use("run_command", {"argv": ["wc", "-l"]}, input_tokens=100, output_tokens=20, cache_write=1000),
        text('{"lines": 1}', input_tokens=130, output_tokens=8, cache_read=1000),
    )
    provider = AnthropicProvider("sk-test-key", base_url=url)
    first = await provider.chat(request())
    (use,) = first.tool_uses
    assert (use.name, use.input, first.stop_reason) == ("run_command", {"argv": ["wc", "-l"]}, "tool_use")
    assert first.usage.cache_write_tokens == 1000 and first.usage.input_tokens == 100
    assert first.model == "claude-sonnet-4-6"

    history = (
        request().messages[0],
        Message(role="assistant", content=first.content),
        Message(role="user", content=(ToolResult(tool_use_id=use.id, content="exit_code: 0\nstdout:\n1"),)),
    )
    second = await provider.chat(request(*history))
    assert second.text == '{"lines": 1}' and second.stop_reason == "end_turn"
    assert (second.usage.cache_read_tokens, second.usage.output_tokens) == (1000, 8)

    sent = server.received[1]
    assert FakeAnthropic.api_key(sent) == "sk-test-key"
    assert sent.tool_results == [
        {"type": "tool_result", "tool_use_id": use.id, "content": "exit_code: 0\nstdout:\n1", "is_error": False}
    ]
    assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent.body["tools"][0]["name"] == "run_command"
    await provider.close()


async def test_429_is_rate_limited_with_the_servers_retry_after(fake: tuple[FakeAnthropic, str]) -> None:
    server, url = fake
    server.queue(rate_limited(7))
    provider = AnthropicProvider("k", base_url=url)
    with pytest.raises(CooError) as caught:
        await provider.chat(request())
    assert caught.value.error_type is ErrorType.LLM_RATE_LIMITED
    assert getattr(caught.value, "retry_after_s", None) == 7
    assert "rate limit" in caught.value.message
    assert len(server.received) == 1  # the SDK did not retry on its own
    await provider.close()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (overloaded(), ErrorType.LLM_UNAVAILABLE),
        (error(500, "api_error", "boom"), ErrorType.LLM_UNAVAILABLE),
        (error(400, "invalid_request_error", "max_tokens too large"), ErrorType.VALIDATION),
    ],
)
async def test_server_errors_are_typed(fake: tuple[FakeAnthropic, str], reply: object, expected: ErrorType) -> None:
    server, url = fake
    server.queue(reply)  # type: ignore[arg-type]
    provider = AnthropicProvider("k", base_url=url)
    with pytest.raises(CooError) as caught:
        await provider.chat(request())
    assert caught.value.error_type is expected
    assert len(server.received) == 1
    await provider.close()


async def test_a_hang_past_the_timeout_is_a_timeout(fake: tuple[FakeAnthropic, str]) -> None:
    server, url = fake
    server.queue(hang(30))
    provider = AnthropicProvider("k", base_url=url, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(CooError) as caught:
        await provider.chat(request())
    assert caught.value.error_type is ErrorType.TIMEOUT
    assert time.monotonic() - started < 10
    await provider.close()


async def test_an_unreachable_api_is_unavailable() -> None:
    provider = AnthropicProvider("k", base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CooError) as caught:
        await provider.chat(request())
    assert caught.value.error_type is ErrorType.LLM_UNAVAILABLE
    await provider.close()


def test_tool_use_blocks_keep_their_ids() -> None:
    block = ToolUse(id="toolu_1", name="run_command", input={"argv": ["true"]})
    assert block.type == "tool_use"
