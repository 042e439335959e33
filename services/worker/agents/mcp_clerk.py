"""Offline script of ``inventory-clerk``: an agent whose tool comes from an MCP server (the example
server ``examples/mcp/inventory.py``), so the MCP path runs without a model."""

from __future__ import annotations

import orjson

from services.worker.llm.base import ChatRequest, ModelResponse
from services.worker.llm.offline import final, first_user_json, script, tool_results, tool_use

LOOKUP = "mcp__inventory__lookup"


@script("inventory-clerk")
def inventory_clerk(request: ChatRequest) -> ModelResponse:
    """Looks up ``input.sku`` with the inventory server's ``lookup`` tool and answers with what it got."""
    sku = str(first_user_json(request).get("sku", ""))
    results = tool_results(request)
    if not results:
        return tool_use(request, LOOKUP, {"sku": sku})
    last = results[-1]
    if last.is_error:
        return final({"sku": sku, "found": False, "error": last.content[:2000]})
    try:
        item = orjson.loads(last.content)
    except orjson.JSONDecodeError:
        item = last.content
    return final({"sku": sku, "found": True, "item": item})
