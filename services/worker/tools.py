"""Tools an agent may call. Every tool runs in the sandbox, never in the worker."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.contracts import SandboxExecRequest, SandboxExecResult
from services.common.errors import CooError
from services.common.slack import SlackClient, mrkdwn_section
from services.common.status import RunStatus, ToolCallStatus
from services.worker.llm.base import ToolSpec
from services.worker.sandbox_client import SandboxClient

if TYPE_CHECKING:
    from services.worker.mcp_tools import McpTools

TOOL_OUTPUT_LIMIT = 32 * 1024  # characters of each stream handed back to the model
MCP_PREFIX = "mcp__"  # an MCP server's tool is offered as mcp__<server>__<tool>


class RunCommandInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="Program and arguments (no shell).")
    stdin: str | None = Field(default=None, description="Text written to the program's standard input.")
    cwd: str = Field(default=".", description="Directory inside the workspace.")
    timeout_s: float = Field(default=30.0, gt=0, le=600)


RUN_COMMAND = ToolSpec(
    name="run_command",
    description="Run a program in the isolated workspace of this step and return its exit code, stdout and stderr.",
    input_schema=RunCommandInput.model_json_schema(),
)


class PostSlackInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=3000, description="The message (Slack mrkdwn).")


POST_SLACK = ToolSpec(
    name="post_slack",
    description="Post a message to the team's Slack channel (the configured incoming webhook).",
    input_schema=PostSlackInput.model_json_schema(),
)

TOOLS: dict[str, ToolSpec] = {RUN_COMMAND.name: RUN_COMMAND, POST_SLACK.name: POST_SLACK}


@dataclass
class ToolCall:
    """One tool call as stored in ``agent_results.tool_calls``."""

    name: str
    input: dict[str, Any]
    output: str = ""
    status: ToolCallStatus = ToolCallStatus.OK
    duration_ms: int = 0
    sandbox_run_id: str | None = None
    exit_code: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    server: str | None = None  # an MCP tool's server and its own name for the tool
    tool: str | None = None

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "duration_ms": self.duration_ms,
        }
        if self.sandbox_run_id:
            row["sandbox_run_id"] = self.sandbox_run_id
        if self.exit_code is not None:
            row["exit_code"] = self.exit_code
        if self.server is not None:
            row["server"], row["tool"] = self.server, self.tool
        return row


@dataclass
class ToolContext:
    mission_id: uuid.UUID
    step_id: uuid.UUID
    attempt: int
    sandbox: SandboxClient
    slack: SlackClient | None = None
    workspace_source: str | None = None  # a directory copied into the attempt's workspace on first use
    egress: list[str] = field(default_factory=list)  # host:port patterns its commands may reach
    headers: dict[str, str] = field(default_factory=dict)
    mcp: McpTools | None = None  # the attempt's MCP sessions (agents with mcp_servers)
    transcript_out: list[str] = field(default_factory=list)
    transcript_err: list[str] = field(default_factory=list)


def clip(text: str) -> str:
    if len(text) <= TOOL_OUTPUT_LIMIT:
        return text
    return text[:TOOL_OUTPUT_LIMIT] + f"\n[... {len(text) - TOOL_OUTPUT_LIMIT} more characters not shown]"


def _format_result(result: SandboxExecResult) -> str:
    parts = [f"exit_code: {result.exit_code}" if result.status != RunStatus.TIMEOUT else "status: timed out"]
    parts.append("stdout:\n" + clip(result.stdout) + (" [truncated]" if result.stdout_truncated else ""))
    if result.stderr:
        parts.append("stderr:\n" + clip(result.stderr) + (" [truncated]" if result.stderr_truncated else ""))
    return "\n".join(parts)


async def call_tool(ctx: ToolContext, name: str, raw_input: dict[str, Any]) -> ToolCall:
    """Run one tool call. A command that fails is a normal tool result (``status=error``);
    the sandbox being unavailable raises ``CooError`` and fails the attempt."""
    if name.startswith(MCP_PREFIX) and ctx.mcp is not None:
        return await ctx.mcp.call(name, raw_input)
    call = ToolCall(name=name, input=raw_input)
    start = time.perf_counter()
    if name not in TOOLS:
        call.status, call.output = ToolCallStatus.ERROR, f"unknown tool '{name}'; available: {sorted(TOOLS)}"
        return call
    if name == POST_SLACK.name:
        return await _post_slack(ctx, call, raw_input, start)
    try:
        args = RunCommandInput.model_validate(raw_input)
    except ValidationError as exc:
        call.status, call.output = ToolCallStatus.ERROR, f"invalid input for {name}: {_first_error(exc)}"
        return call
    request = SandboxExecRequest(
        mission_id=ctx.mission_id,
        step_id=ctx.step_id,
        attempt=ctx.attempt,
        argv=args.argv,
        stdin=args.stdin,
        cwd=args.cwd,
        timeout_s=args.timeout_s,
        egress=ctx.egress,
        workspace_source=ctx.workspace_source,
    )
    try:
        result = await ctx.sandbox.execute(request, headers=ctx.headers)
    except CooError:
        call.duration_ms = int((time.perf_counter() - start) * 1000)
        raise
    call.duration_ms = int((time.perf_counter() - start) * 1000)
    call.sandbox_run_id = str(result.run_id) if result.run_id else None
    call.exit_code = result.exit_code
    call.status = {RunStatus.SUCCEEDED: ToolCallStatus.OK, RunStatus.TIMEOUT: ToolCallStatus.TIMEOUT}.get(
        result.status, ToolCallStatus.ERROR
    )
    call.output = _format_result(result)
    ctx.transcript_out.append(f"$ {' '.join(args.argv)}\n{result.stdout}")
    if result.stderr:
        ctx.transcript_err.append(f"$ {' '.join(args.argv)}\n{result.stderr}")
    return call


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else str(first["msg"])


async def _post_slack(ctx: ToolContext, call: ToolCall, raw_input: dict[str, Any], start: float) -> ToolCall:
    """Post to Slack from the worker (the one tool that needs the network). Slack being down is a
    tool error the agent sees, not a failed attempt."""
    try:
        args = PostSlackInput.model_validate(raw_input)
    except ValidationError as exc:
        call.status, call.output = ToolCallStatus.ERROR, f"invalid input for post_slack: {_first_error(exc)}"
        return call
    if ctx.slack is None:
        call.status, call.output = (
            ToolCallStatus.ERROR,
            "Slack is not configured: set COO_SLACK_WEBHOOK_URL on the worker",
        )
        return call
    delivery = await ctx.slack.post(args.text, [mrkdwn_section(args.text)])
    if not delivery.ok:
        call.status, call.output = ToolCallStatus.ERROR, delivery.error or "Slack did not take the message"
    else:
        call.output = f"posted to Slack ({delivery.reply or 'ok'})"
        ctx.transcript_out.append(f"[slack] {args.text}")
    call.duration_ms = int((time.perf_counter() - start) * 1000)
    return call
