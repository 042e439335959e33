"""Offline scripts of the built-in agents: what the ``offline`` model answers for each of them."""

from __future__ import annotations

import re

from services.worker.llm.base import ChatRequest, ModelResponse
from services.worker.llm.offline import final, first_user_json, script, tool_results, tool_use

_WC = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)


@script("line-counter")
def line_counter(request: ChatRequest) -> ModelResponse:
    """Counts lines, words and bytes of ``input.text`` by running ``wc`` in the sandbox."""
    results = tool_results(request)
    if not results:
        text = first_user_json(request).get("text", "")
        return tool_use(request, "run_command", {"argv": ["wc", "-l", "-w", "-c"], "stdin": str(text)})
    match = _WC.search(results[-1].content.split("stdout:\n", 1)[-1])
    if results[-1].is_error or match is None:
        return final({"error": "wc failed", "tool_output": results[-1].content[:2000]})
    lines, words, size = (int(group) for group in match.groups())
    return final({"lines": lines, "words": words, "bytes": size})


@script("echo")
def echo(request: ChatRequest) -> ModelResponse:
    """Answers with its input, without tools: the cheapest possible step (benchmarks, smoke tests)."""
    return final({"echo": first_user_json(request)})


# The repository agents (security-scanner, code-reviewer, compliance-checker, patcher, notifier).
from services.worker.agents import repo  # noqa: E402, F401
