"""Run one attempt of one step: the agent's model/tool loop, its full result persisted once."""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Deferred
from services.common.contracts import AttemptEvent, StepError, VerificationReport, WorkItem, WorkResult
from services.common.db.models import AgentResult
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.results import result_from_row
from services.common.scrub import scrub, scrub_text
from services.common.settings import Settings
from services.common.slack import SlackClient
from services.common.telemetry import StatusCode, current_trace_id, tracer
from services.common.text import cap_utf8
from services.worker.agent_output import usable
from services.worker.agents.code import CODE_AGENTS, CODE_MODEL, CodeRun
from services.worker.conversation import Conversation, Models, Spend
from services.worker.gate import AgentDefinition, Verdict, claim_attempt
from services.worker.iterations import Mark, feedback
from services.worker.llm.base import (
    ModelProvider,
)
from services.worker.llm.pricing import PriceTable
from services.worker.mcp_tools import open_mcp_tools
from services.worker.metrics import WorkerMetrics
from services.worker.sandbox_client import SandboxClient
from services.worker.tools import ToolCall, ToolContext

log = get_logger(__name__)

CLAIM_RETRY_S = 5.0

# Built once (its values come as parameters): a copy of a finished attempt inserts nothing.
_INSERT_RESULT = (
    insert(AgentResult).on_conflict_do_nothing(index_elements=["step_id", "attempt"]).returning(AgentResult.id)
)  # a copy of a running attempt waits this long before looking again


class AgentRunner:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        sandbox: SandboxClient,
        provider: ModelProvider,
        worker_id: str,
        *,
        metrics: WorkerMetrics | None = None,
        prices: PriceTable | None = None,
        slack: SlackClient | None = None,
    ) -> None:
        self.slack = slack
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.sandbox = sandbox
        self.provider = provider
        self.worker_id = worker_id
        self.metrics = metrics or WorkerMetrics(CollectorRegistry())
        self.prices = prices or PriceTable(settings.model_prices)
        self.models = Models(settings, provider, self.prices, self.metrics)

    async def existing_result(self, session: AsyncSession, item: WorkItem) -> WorkResult:
        row = (
            await session.execute(
                select(AgentResult).where(AgentResult.step_id == item.step_id, AgentResult.attempt == item.attempt)
            )
        ).scalar_one()
        return result_from_row(item.mission_id, row)

    async def run(
        self,
        item: WorkItem,
        *,
        trace_id: str | None = None,
        on_start: Callable[[], Awaitable[None]] | None = None,
    ) -> WorkResult | Verdict:
        """Run the attempt once across every worker. A paused mission's item (``wait``) and a stale
        or cancelled one (``drop``) come back as their verdict; a copy of a running attempt raises
        ``Deferred``; a copy of a finished one answers from the stored result. ``on_start`` runs
        once the attempt is claimed, before the agent starts."""
        # One connection and one transaction per attempt: the claim (a transaction-scoped advisory
        # lock), then the attempt, then its result, committed with the claim's end (``_store``).
        async with self.sessionmaker() as session:
            await session.begin()
            verdict = await claim_attempt(session, item)
            if verdict.action in ("wait", "drop"):
                return verdict
            if verdict.action == "busy":  # come back when the running copy is done
                raise Deferred(verdict.reason, CLAIM_RETRY_S)
            if verdict.action == "done":
                log.info("attempt_already_done", step_id=str(item.step_id), attempt=item.attempt)
                return await self.existing_result(session, item)
            if on_start is not None:
                await on_start()
            attributes: dict[str, str | int] = {
                "coo.mission_id": str(item.mission_id),
                "coo.step": item.step_key,
                "coo.step_id": str(item.step_id),
                "coo.attempt": item.attempt,
                "gen_ai.agent.name": item.agent,
            }
            with tracer().start_as_current_span("agent.execute", attributes=attributes) as span:
                result = await self._run_once(item, verdict.agent, session, trace_id=trace_id or current_trace_id())
                span.set_attributes(
                    {
                        "coo.success": result.success,
                        "gen_ai.usage.input_tokens": result.tokens_in,
                        "gen_ai.usage.output_tokens": result.tokens_out,
                    }
                )
                if result.error is not None:
                    span.set_attribute("error.type", str(result.error.type))
                    span.set_status(StatusCode.ERROR, scrub_text(result.error.message))
            error_type = str(result.error.type) if result.error else None
            log.info("attempt_finished", agent=item.agent, success=result.success, error_type=error_type)
            return result

    async def _run_once(
        self, item: WorkItem, agent_def: AgentDefinition | None, claim: AsyncSession, *, trace_id: str | None
    ) -> WorkResult:
        """The agent's loop, then its full result stored in the claim's transaction (``claim``)."""
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        repo = item.input.get("repo")
        ctx = ToolContext(
            mission_id=item.mission_id,
            step_id=item.step_id,
            attempt=item.attempt,
            sandbox=self.sandbox,
            slack=self.slack,
            workspace_source=repo if isinstance(repo, str) and repo else None,
            egress=list(item.egress),
        )
        calls: list[ToolCall] = []
        events: list[AttemptEvent] = []
        spend = Spend()
        model = "unknown"
        provider = self.provider.name
        output: dict[str, Any] | None = None
        error: StepError | None = None
        verification: dict[str, Any] | None = None
        iterations: list[dict[str, Any]] = []
        code = CODE_AGENTS.get(item.agent)
        try:
            agent = usable(item.agent, agent_def)
            if code is not None:
                model = provider = CODE_MODEL
                self.metrics.prepare_agent(item.agent, None, priced=False)
            else:
                model = self.models.label(agent.model)
                offline = self.models.offline
                self.metrics.prepare_agent(
                    item.agent, None if offline else agent.model, priced=not offline and self.prices.knows(agent.model)
                )
            async with asyncio.timeout(item.timeout_s):  # the whole attempt, every iteration
                if code is not None:
                    run = CodeRun(item, self.settings, self.metrics, ctx, calls=calls, events=events)
                    output = await code(run)
                    if item.checks:
                        verification = await self._verify(item, ctx, last=True)
                else:
                    async with open_mcp_tools(agent.mcp_servers, self.metrics) as ctx.mcp:  # closed when it ends
                        conversation = Conversation(self.models, item, agent, ctx, calls, spend)
                        output, verification = await self._iterate(conversation, iterations, events)
        except CooError as exc:
            if isinstance(exc, VerificationFailed):
                verification = exc.report
            error = StepError(
                type=exc.error_type,
                message=exc.message,
                detail=exc.detail,
                retry_after_s=getattr(exc, "retry_after_s", None),
                retryable=exc.retryable,
            )
        except TimeoutError:
            error = StepError(type=ErrorType.TIMEOUT, message=f"step exceeded its timeout of {item.timeout_s:g}s")
        except Exception as exc:
            log.exception("agent_crashed", agent=item.agent, step_id=str(item.step_id))
            ctx.transcript_err.append(traceback.format_exc())
            error = StepError(type=ErrorType.AGENT_CRASH, message=f"{type(exc).__name__}: {exc}")
        if error is not None and error.type is not ErrorType.AGENT_CRASH:
            ctx.transcript_err.append(f"{error.type}: {error.message}")
        model = spend.model or model
        usage = spend.usage

        duration_ms = int((time.perf_counter() - clock) * 1000)
        self.metrics.attempt(agent=item.agent, duration_s=duration_ms / 1000, error_type=error.type if error else None)
        stdout, out_cut = cap_utf8(scrub_text("\n".join(ctx.transcript_out)), self.settings.output_cap_bytes)
        stderr, err_cut = cap_utf8(scrub_text("\n".join(ctx.transcript_err)), self.settings.output_cap_bytes)
        row = {
            "id": uuid.uuid4(),
            "mission_id": item.mission_id,
            "step_id": item.step_id,
            "attempt": item.attempt,
            "agent": item.agent,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": out_cut,
            "stderr_truncated": err_cut,
            "tool_calls": scrub([call.as_row() for call in calls]),
            "output": scrub(output) if output is not None else None,
            "error": scrub(error.model_dump(mode="json", exclude_none=True)) if error else None,
            "tokens_in": usage.input_tokens,
            "tokens_out": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "cost_usd": spend.cost_usd,
            "model": model,
            "provider": provider,
            "duration_ms": duration_ms,
            "success": error is None,
            "verification": scrub(verification) if verification is not None else None,
            "iterations": iterations if len(iterations) > 1 else None,
            "events": [event.model_dump(mode="json") for event in events] or None,
            "trace_id": trace_id,
            "worker": self.worker_id,
            "started_at": started_at,
            "created_at": datetime.now(UTC),  # not now(): the claim's transaction began before the attempt
        }
        stored = await self._store(claim, item, row)
        if stored is not None:  # another delivery of the same attempt finished first: its result stands
            return stored
        return WorkResult(
            mission_id=item.mission_id,
            step_id=item.step_id,
            attempt=item.attempt,
            result_id=row["id"],
            success=error is None,
            output=row["output"],
            error=StepError.model_validate(row["error"]) if error is not None and row["error"] else None,
            model=model,
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=row["cost_usd"],
            duration_ms=duration_ms,
            worker=self.worker_id,
            started_at=started_at,
            events=events,
        )

    async def _store(self, claim: AsyncSession, item: WorkItem, row: dict[str, Any]) -> WorkResult | None:
        """Insert the result and commit, in the claim's transaction (one commit per attempt). The
        claim's connection sat idle for the whole attempt: if it is gone (Postgres restarted, an idle
        timeout), the result is stored in a transaction of its own rather than lost; the insert
        takes no second copy either way. The result already stored, when another copy won."""
        try:
            inserted = (await (await claim.connection()).execute(_INSERT_RESULT, row)).scalar_one_or_none()
            existing = None if inserted is not None else await self.existing_result(claim, item)
            await claim.commit()
            return existing
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("claim_connection_lost", step_id=str(item.step_id), attempt=item.attempt)
        await claim.close()
        async with self.sessionmaker() as stored, stored.begin():
            inserted = (await (await stored.connection()).execute(_INSERT_RESULT, row)).scalar_one_or_none()
            return None if inserted is not None else await self.existing_result(stored, item)

    async def _iterate(
        self, conversation: Conversation, iterations: list[dict[str, Any]], events: list[AttemptEvent]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The agent's runs of one attempt, each followed by the step's checks: again in the same
        workspace, told what failed, while they fail and iterations are left. Each run's record goes
        to ``iterations`` (and, when the step may iterate, a ``step.iteration`` event to ``events``),
        whether it ended well or not."""
        item, ctx, calls, spend = conversation.item, conversation.ctx, conversation.calls, conversation.spend
        most = item.max_iterations
        for n in range(1, most + 1):
            mark = Mark.begin(n, ctx, calls, spend)
            output: dict[str, Any] | None = None
            verification: dict[str, Any] | None = None
            error_type: str | None = None
            try:
                with tracer().start_as_current_span("agent.iteration", attributes={"coo.iteration": n}) as span:
                    output = await conversation.answer()
                    if not item.checks:
                        return output, None
                    report = await self._check(item, ctx, keep_on_failure=n < most)
                    verification = report.model_dump(mode="json")
                    failure = report.failure()
                    if failure is None:
                        return output, verification
                    error_type = str(failure.type)
                    span.set_attribute("error.type", error_type)
                    if n == most:
                        raise VerificationFailed(failure.message, verification, failure.type)
                    conversation.tell(feedback(report, n, most))
            except CooError as exc:
                error_type = str(exc.error_type)
                raise
            except TimeoutError:
                error_type = str(ErrorType.TIMEOUT)
                raise
            finally:
                cap = self.settings.output_cap_bytes
                iterations.append(
                    mark.record(
                        ctx,
                        calls,
                        spend,
                        output=output,
                        verification=verification,
                        error_type=error_type,
                        cap_bytes=cap,
                    )
                )
                if most > 1:
                    events.append(_iteration_event(iterations[-1], verification))
        raise AssertionError("unreachable: the last iteration returns or raises")

    async def _check(self, item: WorkItem, ctx: ToolContext, *, keep_on_failure: bool) -> VerificationReport:
        """Run the step's checks in its sandbox workspace (kept when they fail and the agent iterates)."""
        return await self.sandbox.verify(
            step_id=item.step_id,
            attempt=item.attempt,
            checks=item.checks,
            mission_id=item.mission_id,
            workspace_source=ctx.workspace_source,
            egress=ctx.egress,
            keep_on_failure=keep_on_failure,
            headers=ctx.headers,
        )

    async def _verify(self, item: WorkItem, ctx: ToolContext, *, last: bool) -> dict[str, Any]:
        """Run the step's checks once; a failed check fails the attempt."""
        report = await self._check(item, ctx, keep_on_failure=not last)
        data: dict[str, Any] = report.model_dump(mode="json")
        failure = report.failure()
        if failure is not None:
            raise VerificationFailed(failure.message, data, failure.type)
        return data


def _iteration_event(record: dict[str, Any], verification: dict[str, Any] | None) -> AttemptEvent:
    failed = [c["name"] for c in (verification or {}).get("checks", []) if not c.get("passed")]
    return AttemptEvent(
        type="step.iteration",
        at=datetime.now(UTC),
        data={
            "n": record["n"],
            "passed": record["error_type"] is None,
            "error_type": record["error_type"],
            "failed_checks": failed,
            "duration_ms": record["duration_ms"],
        },
    )


class VerificationFailed(CooError):
    def __init__(self, message: str, report: dict[str, Any], error_type: ErrorType = ErrorType.VERIFICATION_FAILED):
        super().__init__(error_type, message)
        self.report = report
