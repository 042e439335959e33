"""An agent's conversation with its model: turns of model calls and tool calls until a final answer,
continued with a verification report when the attempt iterates. Every call's tokens and cost add
up in one ``Spend``; ``COO_MAX_AGENT_TURNS`` counts the turns of the whole attempt."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from services.common.contracts import WorkItem
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.settings import Settings
from services.worker import genai
from services.worker.agent_output import check_output, parse_output
from services.worker.gate import AgentDefinition
from services.worker.llm.base import ChatRequest, Message, ModelProvider, ModelResponse, TextBlock, ToolResult, Usage
from services.worker.llm.offline import OFFLINE_MODEL
from services.worker.llm.pricing import PriceTable
from services.worker.metrics import WorkerMetrics
from services.worker.tools import TOOLS, ToolCall, ToolContext, call_tool

log = get_logger(__name__)


@dataclass
class Spend:
    """What the model calls of one attempt used, and cost (``None``: some call had no known price)."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = Decimal(0)
    model: str | None = None


@dataclass
class Models:
    """The worker's model provider with its price table and metrics."""

    settings: Settings
    provider: ModelProvider
    prices: PriceTable
    metrics: WorkerMetrics

    @property
    def offline(self) -> bool:
        """The offline provider: its calls cost nothing and are labelled with ``OFFLINE_MODEL``."""
        return self.provider.name == OFFLINE_MODEL

    def label(self, model: str) -> str:
        """The model name metrics and spans carry (one label for whatever the offline provider plays)."""
        return OFFLINE_MODEL if self.offline else model


class Conversation:
    """One attempt's messages with the model; ``answer()`` runs turns until the agent's final output."""

    def __init__(
        self,
        models: Models,
        item: WorkItem,
        agent: AgentDefinition,
        ctx: ToolContext,
        calls: list[ToolCall],
        spend: Spend,
    ) -> None:
        unknown = sorted(set(agent.tools) - set(TOOLS))
        if unknown:
            raise CooError(
                ErrorType.VALIDATION, f"agent '{agent.name}' lists unknown tools {unknown}; available: {sorted(TOOLS)}"
            )
        self.models, self.item, self.agent, self.ctx, self.calls, self.spend = models, item, agent, ctx, calls, spend
        self.tools = tuple(TOOLS[name] for name in agent.tools) + (ctx.mcp.specs if ctx.mcp is not None else ())
        self.messages: list[Message] = [
            Message(role="user", content=(TextBlock(text=orjson.dumps(item.input).decode()),)),
        ]
        self.turns_left = models.settings.max_agent_turns

    def tell(self, text: str) -> None:
        """Continue the conversation with a user message (a verification report)."""
        self.messages.append(Message(role="user", content=(TextBlock(text=text),)))

    async def answer(self) -> dict[str, Any]:
        """Model turns (and their tool calls) until a final answer: the agent's output."""
        capture = self.models.settings.capture_content
        agent = self.agent
        while self.turns_left > 0:
            self.turns_left -= 1
            request = ChatRequest(
                agent=agent.name,
                model=agent.model,
                system=agent.system_prompt,
                messages=tuple(self.messages),
                tools=self.tools,
                timeout_s=self.item.timeout_s,
                output_schema=agent.output_schema,
            )
            label = self.models.label(request.model)
            with genai.chat_span(request, provider=self.models.provider.name, model=label, capture=capture) as chat:
                response = await self._chat(request)
                genai.record_response(chat, response, model=self.spend.model or label, capture=capture)
            self.messages.append(Message(role="assistant", content=response.content))
            if not response.tool_uses:
                self.ctx.transcript_out.append(response.text)
                output = parse_output(response.text)
                check_output(agent, output)
                return output
            results: list[ToolResult] = []
            for use in response.tool_uses:
                with genai.tool_span(use, parent=chat, capture=capture) as tool:
                    call = await call_tool(self.ctx, use.name, use.input)
                    genai.record_tool(tool, call, capture=capture)
                self.calls.append(call)
                results.append(ToolResult(tool_use_id=use.id, content=call.output, is_error=call.status != "ok"))
            self.messages.append(Message(role="user", content=tuple(results)))
        turns = self.models.settings.max_agent_turns
        raise CooError(ErrorType.AGENT_CRASH, f"agent did not finish within {turns} model turns")

    async def _chat(self, request: ChatRequest) -> ModelResponse:
        """One model call: measured, its tokens and cost added to the attempt's spend."""
        models, spend = self.models, self.spend
        provider = models.provider.name
        label = models.label(request.model)
        started = time.perf_counter()
        try:
            response = await models.provider.chat(request)
        except (CooError, TimeoutError) as exc:
            error_type = exc.error_type if isinstance(exc, CooError) else ErrorType.TIMEOUT
            models.metrics.model_call(
                provider=provider,
                model=label,
                usage=None,
                duration_s=time.perf_counter() - started,
                error_type=str(error_type),
            )
            raise
        model = models.label(response.model)
        spend.model = model
        spend.usage = spend.usage + response.usage
        models.metrics.model_call(
            provider=provider,
            model=label,
            usage=response.usage,
            duration_s=time.perf_counter() - started,
            error_type=None,
        )
        if models.offline:
            return response
        cost = models.prices.cost(model, response.usage)
        if cost is None and models.prices.knows(request.model):
            cost = models.prices.cost(request.model, response.usage)  # a dated snapshot of a priced alias
        models.metrics.cost(model=model, agent=request.agent, usd=cost)
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
