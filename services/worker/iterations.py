"""Iterations of an attempt: the agent runs, its checks run, and while they fail (and iterations are
left) the agent runs again in the same workspace with the verification report. Each iteration keeps
its own record — output, stdout and stderr, tool calls, tokens, cost, duration, verification, error
type — and the attempt's own fields are their totals with the last iteration's output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.common.contracts import VerificationReport
from services.common.scrub import scrub, scrub_text
from services.common.status import RunStatus
from services.common.text import cap_utf8
from services.worker.conversation import Spend
from services.worker.tools import ToolCall, ToolContext


@dataclass(frozen=True)
class Mark:
    """Where an iteration began in the attempt's transcripts, calls and spend."""

    n: int
    clock: float
    out: int
    err: int
    calls: int
    tokens: tuple[int, int, int, int]
    cost_usd: Decimal | None

    @classmethod
    def begin(cls, n: int, ctx: ToolContext, calls: list[ToolCall], spend: Spend) -> Mark:
        usage = spend.usage
        return cls(
            n=n,
            clock=time.perf_counter(),
            out=len(ctx.transcript_out),
            err=len(ctx.transcript_err),
            calls=len(calls),
            tokens=(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens),
            cost_usd=spend.cost_usd,
        )

    def record(
        self,
        ctx: ToolContext,
        calls: list[ToolCall],
        spend: Spend,
        *,
        output: dict[str, Any] | None,
        verification: dict[str, Any] | None,
        error_type: str | None,
        cap_bytes: int,
    ) -> dict[str, Any]:
        """The iteration's stored record (``agent_results.iterations[n-1]``), scrubbed and capped."""
        usage = spend.usage
        stdout, _ = cap_utf8(scrub_text("\n".join(ctx.transcript_out[self.out :])), cap_bytes)
        stderr, _ = cap_utf8(scrub_text("\n".join(ctx.transcript_err[self.err :])), cap_bytes)
        cost = None if spend.cost_usd is None or self.cost_usd is None else spend.cost_usd - self.cost_usd
        return {
            "n": self.n,
            "output": scrub(output) if output is not None else None,
            "stdout": stdout,
            "stderr": stderr,
            "tool_calls": scrub([call.as_row() for call in calls[self.calls :]]),
            "tokens_in": usage.input_tokens - self.tokens[0],
            "tokens_out": usage.output_tokens - self.tokens[1],
            "cache_read_tokens": usage.cache_read_tokens - self.tokens[2],
            "cache_write_tokens": usage.cache_write_tokens - self.tokens[3],
            "cost_usd": None if cost is None else str(cost),
            "duration_ms": int((time.perf_counter() - self.clock) * 1000),
            "verification": scrub(verification) if verification is not None else None,
            "error_type": error_type,
        }


def feedback(report: VerificationReport, n: int, max_iterations: int) -> str:
    """What the agent is told when its checks failed and it has another iteration: each failed
    check's name, kind, exit code and the tail of its output."""
    lines = [
        f"Verification of your work failed (iteration {n} of {max_iterations}). Your workspace is as you left it:",
        "fix what the failing checks report, then give your final answer again.",
    ]
    if report.error is not None:  # the checks could not run at all
        lines.append(f"- the checks did not run: {report.error.type}: {report.error.message}")
    for check in report.checks:
        if check.passed:
            continue
        ended = "timed out" if check.status == RunStatus.TIMEOUT else f"exit code {check.exit_code}"
        lines.append(f"- check '{check.name}' ({check.kind}) failed, {ended}; the end of its output:")
        lines.append(scrub_text(check.output_tail) or "(no output)")
    return "\n".join(lines)
