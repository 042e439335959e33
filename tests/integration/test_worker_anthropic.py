"""Missions on Claude: the real worker (consuming from NATS) and orchestrator, the real anthropic
SDK, and a local server speaking the Messages API. Each case ends in the right step status,
ErrorType, attempt count and persisted results."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import (
    Stack,
    db_fetch,
    wait_for,
)
from tests.fakes.anthropic import MODEL, FakeAnthropic, hang, overloaded, rate_limited, text, tool_use


async def run_mission(stack: Stack, max_attempts: int = 3) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    workflow = {
        "name": "count",
        "steps": [
            {
                "id": "count",
                "agent": "line-counter",
                "input": {"text": "{{ input.text }}"},
                "timeout_s": 30,
                "retry": {"max_attempts": max_attempts, "base": 0.1, "max": 0.2},
            }
        ],
    }
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": "count", "input": {"text": "a\nb\n"}})
        assert accepted.status_code == 202, accepted.text
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        mission = await wait_for(finished, timeout_s=60, what="the mission to finish")
        results = (await client.get(f"/v1/missions/{mission_id}/steps/count/results")).json()
    return mission, sorted(results, key=lambda r: r["attempt"])


async def metric(stack: Stack, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"{stack.worker.url}/metrics")).text
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_tool_use_round_trip_with_cache_tokens_is_priced_and_persisted(
    claude: tuple[Stack, FakeAnthropic],
) -> None:
    stack, fake = claude
    fake.queue(
        tool_use(
            "run_command",
            {"argv": ["wc", "-l", "-w", "-c"], "stdin": "a\nb\n"},
            input_tokens=1000,
            output_tokens=50,
            cache_write=2000,
        ),
        text('{"lines": 2, "words": 2, "bytes": 4}', input_tokens=1200, output_tokens=20, cache_read=2000),
    )
    mission, results = await run_mission(stack)
    assert mission["status"] == "succeeded", mission
    (step,) = mission["steps"]
    assert (step["status"], step["attempt"], step["output"]) == ("succeeded", 1, {"lines": 2, "words": 2, "bytes": 4})

    (result,) = results
    assert result["success"] is True and result["provider"] == "anthropic" and result["model"] == MODEL
    assert (result["tokens_in"], result["tokens_out"]) == (2200, 70)
    assert (result["cache_write_tokens"], result["cache_read_tokens"]) == (2000, 2000)
    # sonnet 4.6: $3 in, $15 out, $3.75 cache write, $0.30 cache read per million tokens
    expected = (Decimal(2200 * 3) + 70 * 15 + Decimal("7500") + Decimal("600")) / 1_000_000
    assert Decimal(str(result["cost_usd"])) == expected
    (call,) = result["tool_calls"]
    assert call["name"] == "run_command" and call["status"] == "ok" and call["duration_ms"] >= 0
    assert "2       2       4" in call["output"] or call["output"].split("stdout:\n")[1].split()[:3] == ["2", "2", "4"]

    # The model saw the real command output as the tool result of its own tool_use id.
    assert len(fake.received) == 2
    (tool_result,) = fake.received[1].tool_results
    assert tool_result["tool_use_id"] == fake.received[1].body["messages"][1]["content"][0]["id"]
    assert "exit_code: 0" in tool_result["content"]

    rows = await db_fetch(stack.settings, "SELECT cost_usd, provider FROM agent_results")
    assert [(Decimal(r["cost_usd"]), r["provider"]) for r in rows] == [(expected, "anthropic")]
    assert await metric(stack, "coo_llm_tokens_total", model=MODEL, type="cache_read") == 2000
    assert await metric(stack, "coo_llm_cost_usd_total", model=MODEL, agent="line-counter") == pytest.approx(
        float(expected)
    )
    assert await metric(stack, "coo_agent_runs_total", agent="line-counter", status="succeeded") == 1
    assert (
        await metric(
            stack, "gen_ai_client_token_usage_count", gen_ai_provider_name="anthropic", gen_ai_token_type="input"
        )
        == 2
    )


async def test_429_retries_after_the_servers_retry_after_and_succeeds(claude: tuple[Stack, FakeAnthropic]) -> None:
    stack, fake = claude
    fake.queue(rate_limited(1.5), text('{"lines": 2, "words": 2, "bytes": 4}'))
    mission, results = await run_mission(stack)
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["attempt"] == 2
    first, second = results
    assert first["success"] is False and first["error"]["type"] == "LLM_RATE_LIMITED"
    assert first["error"]["retry_after_s"] == 1.5
    assert second["success"] is True
    async with stack.client() as client:
        timeline = (await client.get(f"/v1/missions/{mission['id']}/timeline")).json()
    waits = [e["data"] for e in timeline if e["type"] == "step.retry_wait"]
    assert len(waits) == 1 and waits[0]["retry_in_s"] >= 1.5 and waits[0]["error_type"] == "LLM_RATE_LIMITED"
    assert await metric(stack, "coo_agent_errors_total", agent="line-counter", error_type="LLM_RATE_LIMITED") == 1


async def test_529_overloaded_fails_for_good_after_the_last_attempt(claude: tuple[Stack, FakeAnthropic]) -> None:
    stack, fake = claude
    fake.queue(overloaded(), overloaded())
    mission, results = await run_mission(stack, max_attempts=2)
    assert mission["status"] == "failed", mission
    (step,) = mission["steps"]
    assert (step["status"], step["attempt"], step["error"]["type"]) == ("failed", 2, "LLM_UNAVAILABLE")
    assert [(r["attempt"], r["success"], r["error"]["type"]) for r in results] == [
        (1, False, "LLM_UNAVAILABLE"),
        (2, False, "LLM_UNAVAILABLE"),
    ]
    assert "overloaded (529)" in results[0]["error"]["message"]
    assert len(fake.received) == 2  # one call per attempt: the SDK itself never retried


async def test_a_hang_past_the_timeout_is_a_timeout_then_a_new_attempt(claude: tuple[Stack, FakeAnthropic]) -> None:
    stack, fake = claude
    fake.queue(hang(30), text('{"lines": 2, "words": 2, "bytes": 4}'))
    mission, results = await run_mission(stack)
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["attempt"] == 2
    first, second = results
    assert (first["success"], first["error"]["type"]) == (False, "TIMEOUT")
    assert "1.5s" in first["error"]["message"]
    assert second["success"] is True and second["tool_calls"] == []
