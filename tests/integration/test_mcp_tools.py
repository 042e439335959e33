"""Tools from remote MCP servers: the example inventory server (``examples/mcp/inventory.py``, the
real ``mcp`` SDK over streamable HTTP) served on a free port, the real worker and orchestrator, and
either Claude through the real anthropic SDK against a local Messages API or the offline model."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from services.cli.embedded import free_port
from tests.conftest import RunningApp, Stack, wait_for
from tests.fakes.anthropic import MODEL, FakeAnthropic, text, tool_use
from tests.integration.test_worker_anthropic import metric

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _inventory_module() -> Any:
    spec = importlib.util.spec_from_file_location("inventory_example", EXAMPLES / "mcp" / "inventory.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def inventory() -> AsyncIterator[str]:
    """The example MCP server, in this test's event loop; its endpoint URL."""
    server = _inventory_module().build_server()
    app = RunningApp(server.streamable_http_app(), free_port())
    await app.start()
    try:
        yield f"{app.url}/mcp"
    finally:
        await app.stop()


async def put_agent(stack: Stack, name: str, body: dict[str, Any]) -> None:
    async with stack.client() as client:
        put = await client.put(f"/v1/agents/{name}", json=body)
        assert put.status_code in (200, 201), put.text


async def run_mission(
    stack: Stack, agent: str, agent_input: dict[str, Any], *, max_attempts: int = 1
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    workflow = {
        "name": f"mcp-{agent}",
        "steps": [
            {
                "id": "ask",
                "agent": agent,
                "input": {"sku": "{{ input.sku }}"},
                "timeout_s": 30,
                "retry": {"max_attempts": max_attempts, "base": 0.1, "max": 0.2},
            }
        ],
    }
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": workflow["name"], "input": agent_input})
        assert accepted.status_code == 202, accepted.text
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        mission = await wait_for(finished, timeout_s=60, what="the mission to finish")
        results = (await client.get(f"/v1/missions/{mission_id}/steps/ask/results")).json()
    return mission, sorted(results, key=lambda r: r["attempt"])


async def test_claude_is_offered_the_servers_allow_listed_tools_and_reads_their_answer(
    claude: tuple[Stack, FakeAnthropic], inventory: str
) -> None:
    stack, fake = claude
    await put_agent(
        stack,
        "stock-checker",
        {
            "model": MODEL,
            "system_prompt": "Look the SKU up.",
            "tools": ["run_command"],
            "mcp_servers": [{"name": "inventory", "url": inventory, "tools": ["lookup"]}],
        },
    )
    fake.queue(
        tool_use("mcp__inventory__lookup", {"sku": "GADGET-7"}),
        text('{"sku": "GADGET-7", "available": 3}'),
    )
    mission, results = await run_mission(stack, "stock-checker", {"sku": "GADGET-7"})
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["output"] == {"sku": "GADGET-7", "available": 3}

    first, second = fake.received[0].body, fake.received[1].body
    offered = {tool["name"]: tool for tool in first["tools"]}
    assert set(offered) == {"run_command", "mcp__inventory__lookup"}  # reserve is not allow-listed
    schema = offered["mcp__inventory__lookup"]["input_schema"]
    assert schema["properties"] == {"sku": {"title": "Sku", "type": "string"}} and schema["required"] == ["sku"]
    assert offered["mcp__inventory__lookup"]["description"].startswith("Look up one SKU")

    (tool_result,) = [
        block
        for message in second["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    answered = tool_result["content"] if isinstance(tool_result["content"], str) else tool_result["content"][0]["text"]
    assert orjson.loads(answered) == {
        "sku": "GADGET-7",
        "name": "Gadget, large",
        "on_hand": 3,
        "reserved": 0,
        "available": 3,
    }
    assert not tool_result.get("is_error")

    (result,) = results
    (call,) = result["tool_calls"]
    assert (call["name"], call["server"], call["tool"], call["status"]) == (
        "mcp__inventory__lookup",
        "inventory",
        "lookup",
        "ok",
    )
    assert call["input"] == {"sku": "GADGET-7"} and orjson.loads(call["output"])["available"] == 3
    assert call["duration_ms"] >= 0
    assert await metric(stack, "coo_tool_calls_total", server="inventory", tool="lookup", status="ok") == 1
    assert await metric(stack, "coo_tool_call_duration_seconds_count", server="inventory", tool="lookup") == 1


async def test_an_mcp_error_result_is_a_tool_error_the_model_reads(
    claude: tuple[Stack, FakeAnthropic], inventory: str
) -> None:
    stack, fake = claude
    await put_agent(stack, "stock-checker", {"model": MODEL, "mcp_servers": [{"name": "inventory", "url": inventory}]})
    fake.queue(tool_use("mcp__inventory__reserve", {"sku": "SPROCKET-3", "qty": 2}), text('{"reserved": false}'))
    mission, results = await run_mission(stack, "stock-checker", {"sku": "SPROCKET-3"})
    assert mission["status"] == "succeeded", mission
    assert {tool["name"] for tool in fake.received[0].body["tools"]} == {
        "mcp__inventory__lookup",
        "mcp__inventory__reserve",
    }
    (call,) = results[0]["tool_calls"]
    assert (call["name"], call["status"]) == ("mcp__inventory__reserve", "error")
    assert "cannot reserve 2" in call["output"]
    assert await metric(stack, "coo_tool_calls_total", server="inventory", tool="reserve", status="error") == 1


async def test_offline_inventory_clerk_answers_with_what_the_server_said(stack: Stack, inventory: str) -> None:
    clerk = yaml.safe_load((EXAMPLES / "agents" / "inventory-clerk.yaml").read_text())
    clerk["model"] = "offline"
    clerk["mcp_servers"][0]["url"] = inventory
    await put_agent(stack, "inventory-clerk", clerk)
    mission, results = await run_mission(stack, "inventory-clerk", {"sku": "WIDGET-1"})
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["output"] == {
        "sku": "WIDGET-1",
        "found": True,
        "item": {"sku": "WIDGET-1", "name": "Widget, blue", "on_hand": 12, "reserved": 0, "available": 12},
    }
    (call,) = results[0]["tool_calls"]
    assert (call["name"], call["server"], call["tool"], call["status"]) == (
        "mcp__inventory__lookup",
        "inventory",
        "lookup",
        "ok",
    )


async def test_a_server_that_is_down_fails_the_attempt_with_tool_unavailable_and_it_is_retried(stack: Stack) -> None:
    down = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    clerk = yaml.safe_load((EXAMPLES / "agents" / "inventory-clerk.yaml").read_text())
    clerk["model"] = "offline"
    clerk["mcp_servers"][0]["url"] = down
    await put_agent(stack, "inventory-clerk", clerk)
    mission, results = await run_mission(stack, "inventory-clerk", {"sku": "WIDGET-1"}, max_attempts=2)
    assert mission["status"] == "failed", mission
    (step,) = mission["steps"]
    assert step["attempt"] == 2 and step["error"]["type"] == "TOOL_UNAVAILABLE", step
    assert [r["error"]["type"] for r in results] == ["TOOL_UNAVAILABLE", "TOOL_UNAVAILABLE"]
    assert all(r["tool_calls"] == [] for r in results)
    assert "MCP server 'inventory'" in results[0]["error"]["message"]


@pytest.mark.parametrize(
    ("server", "field", "says"),
    [
        ({"name": "inventory", "url": "ftp://example.com/mcp"}, "mcp_servers.0.url", "http"),
        ({"name": "inventory", "url": "not a url"}, "mcp_servers.0.url", "http"),
        ({"name": "inventory", "url": "http://x/mcp", "color": "red"}, "mcp_servers.0.color", "Extra"),
        ({"name": "Inventory!", "url": "http://x/mcp"}, "mcp_servers.0.name", "pattern"),
        (
            {"name": "inventory", "url": "http://x/mcp", "headers_secret": "inv-key"},
            "mcp_servers.0.headers_secret",
            "not supported yet",
        ),
    ],
)
async def test_put_agent_refuses_a_bad_mcp_server_with_its_field(
    stack: Stack, server: dict[str, Any], field: str, says: str
) -> None:
    async with stack.client() as client:
        put = await client.put("/v1/agents/bad-clerk", json={"model": "offline", "mcp_servers": [server]})
    assert put.status_code == 422, put.text
    error = put.json()["error"]
    assert error["field"] == field and says in error["message"], error


async def test_put_agent_refuses_two_servers_of_one_name(stack: Stack) -> None:
    servers = [{"name": "inventory", "url": "http://a/mcp"}, {"name": "inventory", "url": "http://b/mcp"}]
    async with stack.client() as client:
        put = await client.put("/v1/agents/bad-clerk", json={"model": "offline", "mcp_servers": servers})
        assert put.status_code == 422, put.text
        assert put.json()["error"]["field"] == "mcp_servers" and "unique" in put.json()["error"]["message"]
        ok = await client.put(
            "/v1/agents/good-clerk",
            json={"model": "offline", "mcp_servers": [{"name": "inventory", "url": "https://inv.example/mcp"}]},
        )
        assert ok.status_code in (200, 201), ok.text
        assert ok.json()["mcp_servers"] == [{"name": "inventory", "url": "https://inv.example/mcp"}]
