"""Run one attempt of one step: the agent's model/tool loop, its full result persisted once."""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Deferred
from services.common.contracts import AttemptEvent, StepError, WorkItem, WorkResult
from services.common.db.models import AgentResult
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.results import result_from_row
from services.common.scrub import scrub, scrub_text
from services.common.settings import Settings
from services.common.slack import SlackClient
from services.common.telemetry import StatusCode, current_trace_id, tracer
from services.common.text import cap_utf8
from services.worker import genai
from services.worker.agent_output import check_output, parse_output, usable
from services.worker.agents.code import CODE_AGENTS, CODE_MODEL, CodeRun
from services.worker.gate import AgentDefinition, Verdict, claim_attempt
from services.worker.llm.base import (
    ChatRequest,
    Message,
    ModelProvider,
    ModelResponse,
    TextBlock,
    ToolResult,
    Usage,
)
from services.worker.llm.offline import OFFLINE_MODEL
from services.worker.llm.pricing import PriceTable
from services.worker.metrics import WorkerMetrics
from services.worker.sandbox_client import SandboxClient
from services.worker.tools import TOOLS, ToolCall, ToolContext, call_tool

log = get_logger(__name__)

CLAIM_RETRY_S = 5.0

# Built once (its values come as parameters): a copy of a finished attempt inserts nothing.
_INSERT_RESULT = (
    insert(AgentResult).on_conflict_do_nothing(index_elements=["step_id", "attempt"]).returning(AgentResult.id)
)  # a copy of a running attempt waits this long before looking again


@dataclass
class Spend:
    """What the model calls of one attempt used, and cost (``None``: some call had no known price)."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = Decimal(0)
    model: str | None = None


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

    @property
    def _offline(self) -> bool:
        """The offline provider: its calls cost nothing and are labelled with ``OFFLINE_MODEL``."""
        return self.provider.name == OFFLINE_MODEL

    def _label(self, model: str) -> str:
        """The model name metrics and spans carry (one label for whatever the offline provider plays)."""
        return OFFLINE_MODEL if self._offline else model

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
        code = CODE_AGENTS.get(item.agent)
        try:
            agent = usable(item.agent, agent_def)
            if code is not None:
                model = provider = CODE_MODEL
                self.metrics.prepare_agent(item.agent, None, priced=False)
            else:
                model = self._label(agent.model)
                offline = self._offline
                self.metrics.prepare_agent(
                    item.agent, None if offline else agent.model, priced=not offline and self.prices.knows(agent.model)
                )
            async with asyncio.timeout(item.timeout_s):
                if code is not None:
                    run = CodeRun(item=item, settings=self.settings, metrics=self.metrics, tools=ctx, calls=calls)
                    run.events = events
                    output = await code(run)
                else:
                    output = await self._loop(item, agent, ctx, calls, spend)
                if item.checks:
                    verification = await self._verify(item, ctx)
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

    async def _loop(
        self, item: WorkItem, agent: AgentDefinition, ctx: ToolContext, calls: list[ToolCall], spend: Spend
    ) -> dict[str, Any]:
        unknown = sorted(set(agent.tools) - set(TOOLS))
        if unknown:
            raise CooError(
                ErrorType.VALIDATION, f"agent '{agent.name}' lists unknown tools {unknown}; available: {sorted(TOOLS)}"
            )
        tools = tuple(TOOLS[name] for name in agent.tools)
        messages: list[Message] = [
            Message(role="user", content=(TextBlock(text=orjson.dumps(item.input).decode()),)),
        ]
        capture = self.settings.capture_content
        for _turn in range(self.settings.max_agent_turns):
            request = ChatRequest(
                agent=agent.name,
                model=agent.model,
                system=agent.system_prompt,
                messages=tuple(messages),
                tools=tools,
                timeout_s=item.timeout_s,
            )
            label = self._label(request.model)
            with genai.chat_span(request, provider=self.provider.name, model=label, capture=capture) as chat:
                response = await self._chat(request, spend)
                genai.record_response(chat, response, model=spend.model or label, capture=capture)
            messages.append(Message(role="assistant", content=response.content))
            if not response.tool_uses:
                ctx.transcript_out.append(response.text)
                output = parse_output(response.text)
                check_output(agent, output)
                return output
            results: list[ToolResult] = []
            for use in response.tool_uses:
                with genai.tool_span(use, parent=chat, capture=capture) as tool:
                    call = await call_tool(ctx, use.name, use.input)
                    genai.record_tool(tool, call, capture=capture)
                calls.append(call)
                results.append(ToolResult(tool_use_id=use.id, content=call.output, is_error=call.status != "ok"))
            messages.append(Message(role="user", content=tuple(results)))
        raise CooError(
            ErrorType.AGENT_CRASH, f"agent did not finish within {self.settings.max_agent_turns} model turns"
        )

    async def _chat(self, request: ChatRequest, spend: Spend) -> ModelResponse:
        """One model call: measured, its tokens and cost added to ``spend``."""
        provider = self.provider.name
        label = self._label(request.model)
        started = time.perf_counter()
        try:
            response = await self.provider.chat(request)
        except CooError as exc:
            self.metrics.model_call(
                provider=provider,
                model=label,
                usage=None,
                duration_s=time.perf_counter() - started,
                error_type=str(exc.error_type),
            )
            raise
        except TimeoutError:
            self.metrics.model_call(
                provider=provider,
                model=label,
                usage=None,
                duration_s=time.perf_counter() - started,
                error_type=str(ErrorType.TIMEOUT),
            )
            raise
        model = self._label(response.model)
        spend.model = model
        spend.usage = spend.usage + response.usage
        self.metrics.model_call(
            provider=provider,
            model=label,
            usage=response.usage,
            duration_s=time.perf_counter() - started,
            error_type=None,
        )
        if self._offline:
            return response
        cost = self.prices.cost(model, response.usage)
        if cost is None and self.prices.knows(request.model):
            cost = self.prices.cost(request.model, response.usage)  # a dated snapshot of a priced alias
        self.metrics.cost(model=model, agent=request.agent, usd=cost)
        if cost is None:
            log.warning(
                "model_cost_unknown",
                model=model,
                agent=request.agent,
                detail="no price for this model: its cost is stored as unknown; set COO_MODEL_PRICES to price it",
            )
            spend.cost_usd = None
        elif spend.cost_usd is not None:
            spend.cost_usd += cost
        return response

    async def _verify(self, item: WorkItem, ctx: ToolContext) -> dict[str, Any]:
        """Run the step's checks in its sandbox workspace; a failed check fails the attempt."""
        report = await self.sandbox.verify(
            step_id=item.step_id,
            attempt=item.attempt,
            checks=item.checks,
            mission_id=item.mission_id,
            workspace_source=ctx.workspace_source,
            egress=ctx.egress,
            headers=ctx.headers,
        )
        data: dict[str, Any] = report.model_dump(mode="json")
        failure = report.failure()
        if failure is not None:
            raise VerificationFailed(failure.message, data)
        return data


class VerificationFailed(CooError):
    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(ErrorType.VERIFICATION_FAILED, message)
        self.report = report
