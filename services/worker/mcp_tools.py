"""Tools from remote MCP servers (streamable HTTP), through the official ``mcp`` SDK's client.

An attempt of an agent with ``mcp_servers`` connects to each server when it begins and lists its
tools; each is offered to the model as ``mcp__<server>__<tool>`` with the server's own input schema
(only the allow-listed ones when the server's entry lists ``tools``). A server that does not answer
then fails the attempt with ``TOOL_UNAVAILABLE`` (retried). A call is a tool result like any other:
an ``isError`` result, a protocol error or a server gone mid-attempt is a tool error the model reads.
The sessions close when the attempt ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from mcp import Client
from mcp.types import CallToolResult, TextContent, Tool

from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.scrub import scrub_text
from services.common.status import ToolCallStatus
from services.worker.llm.base import ToolSpec
from services.worker.metrics import WorkerMetrics
from services.worker.tools import MCP_PREFIX, ToolCall, clip

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0  # to connect to one server and list its tools
CALL_TIMEOUT_S = 120.0  # one tool call (the attempt's own timeout still bounds it)
_MAX_LIST_PAGES = 20


def tool_name(server: str, tool: str) -> str:
    """The name the model sees for ``tool`` of ``server``."""
    return f"{MCP_PREFIX}{server}__{tool}"


@dataclass(frozen=True)
class McpTool:
    server: str
    tool: str
    spec: ToolSpec
    client: Client


class McpTools:
    """The MCP tools of one attempt, by the name the model sees."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.tools: dict[str, McpTool] = {}

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self.tools.values())

    async def add_server(self, stack: AsyncExitStack, server: dict[str, Any]) -> None:
        """Connect to ``server`` (closed with ``stack``) and take its tools, or raise ``TOOL_UNAVAILABLE``."""
        name, url, allowed = server["name"], server["url"], server.get("tools")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                client = await stack.enter_async_context(Client(url, cache=None, read_timeout_seconds=CALL_TIMEOUT_S))
                listed = await _list_tools(client)
        except TimeoutError as exc:
            raise _unavailable(name, url, f"no answer within {CONNECT_TIMEOUT_S:g}s") from exc
        except Exception as exc:  # refused, reset, an HTTP error, a protocol error: all mean "not answering"
            raise _unavailable(name, url, _describe(exc)) from exc
        offered = {tool.name: tool for tool in listed}
        if allowed is not None:
            missing = sorted(set(allowed) - set(offered))
            if missing:
                raise _unavailable(name, url, f"it does not offer the allow-listed tools {missing}")
            offered = {tool: offered[tool] for tool in allowed}
        for tool in offered.values():
            full = tool_name(name, tool.name)
            spec = ToolSpec(name=full, description=tool.description or "", input_schema=dict(tool.input_schema))
            self.tools[full] = McpTool(name, tool.name, spec, client)
            self.metrics.prepare_tool(name, tool.name)
        log.info("mcp_server_connected", server=name, tools=sorted(offered))

    async def call(self, name: str, raw_input: dict[str, Any]) -> ToolCall:
        """Call one MCP tool; whatever goes wrong is the call's ``error`` (or ``timeout``) status."""
        found = self.tools.get(name)
        if found is None:
            return ToolCall(
                name=name,
                input=raw_input,
                status=ToolCallStatus.ERROR,
                output=f"unknown tool '{name}'; MCP tools offered: {sorted(self.tools)}",
            )
        call = ToolCall(name=name, input=raw_input, server=found.server, tool=found.tool)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                result = await found.client.call_tool(found.tool, raw_input)
        except TimeoutError:
            call.status, call.output = ToolCallStatus.TIMEOUT, f"no answer within {CALL_TIMEOUT_S:g}s"
        except Exception as exc:  # the server's refusal or its disappearance: the model reads it
            log.warning("mcp_call_failed", server=found.server, tool=found.tool, error=scrub_text(_describe(exc)))
            call.status, call.output = ToolCallStatus.ERROR, f"MCP server '{found.server}' failed: {_describe(exc)}"
        else:
            call.status = ToolCallStatus.ERROR if result.is_error else ToolCallStatus.OK
            call.output = clip(result_text(result))
        duration_s = time.perf_counter() - start
        call.duration_ms = int(duration_s * 1000)
        self.metrics.tool_call(server=found.server, tool=found.tool, status=call.status, duration_s=duration_s)
        return call


@asynccontextmanager
async def open_mcp_tools(servers: Sequence[dict[str, Any]], metrics: WorkerMetrics) -> AsyncIterator[McpTools]:
    """The tools of ``servers``, their sessions open for the block and closed after it (a failure to
    close is logged: the attempt's outcome stands)."""
    tools = McpTools(metrics)
    stack = AsyncExitStack()
    try:
        for server in servers:
            await tools.add_server(stack, server)
        yield tools
    finally:
        try:
            await stack.aclose()
        except Exception as exc:
            log.warning("mcp_session_close_failed", error=scrub_text(_describe(exc)))


async def _list_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _page in range(_MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def result_text(result: CallToolResult) -> str:
    """What the model reads of a tool's result: its text content joined; without text, its structured
    content as JSON; other content (images, resources) by type only."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    others = [f"[{block.type} content not shown]" for block in result.content if not isinstance(block, TextContent)]
    if not texts and result.structured_content is not None:
        texts = [orjson.dumps(result.structured_content).decode()]
    return "\n".join(texts + others)


def _describe(exc: BaseException) -> str:
    """The innermost causes of ``exc`` (the SDK raises exception groups), one line."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unavailable(name: str, url: str, reason: str) -> CooError:
    return CooError(ErrorType.TOOL_UNAVAILABLE, f"MCP server '{name}' at {url} is unavailable: {reason}")
