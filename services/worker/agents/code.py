"""Agents written in code rather than run by a model (``github-pr``): the worker calls one in place of
the model loop, on Claude and offline alike; its output, tool calls and events are stored like any
attempt's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.contracts import AttemptEvent, WorkItem
from services.common.settings import Settings
from services.worker.metrics import WorkerMetrics
from services.worker.tools import ToolCall, ToolContext

CODE_MODEL = "builtin"  # what the model and provider columns say of an attempt run in code


@dataclass
class CodeRun:
    """What a code agent gets: its work item and settings, and where it reports what it did."""

    item: WorkItem
    settings: Settings
    metrics: WorkerMetrics
    tools: ToolContext  # transcript_out / transcript_err become the attempt's stdout / stderr
    calls: list[ToolCall] = field(default_factory=list)  # each outside call, stored as a tool call
    events: list[AttemptEvent] = field(default_factory=list)  # recorded on the mission's timeline


CodeAgent = Callable[[CodeRun], Awaitable[dict[str, Any]]]
CODE_AGENTS: dict[str, CodeAgent] = {}


def code_agent(name: str) -> Callable[[CodeAgent], CodeAgent]:
    """Register ``fn`` as the agent ``name``: its return value is the step's output; a ``CooError``
    fails the attempt with its type (and its ``retryable``, when set)."""

    def register(fn: CodeAgent) -> CodeAgent:
        CODE_AGENTS[name] = fn
        return fn

    return register
