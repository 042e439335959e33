"""A small MCP server for the inventory-clerk example: tools ``lookup`` and ``reserve`` over an
in-memory stock table, served over streamable HTTP at ``http://127.0.0.1:<port>/mcp``.

    python examples/mcp/inventory.py --port 8765
"""

from __future__ import annotations

import argparse
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

STOCK: dict[str, dict[str, Any]] = {
    "WIDGET-1": {"name": "Widget, blue", "on_hand": 12, "reserved": 0},
    "GADGET-7": {"name": "Gadget, large", "on_hand": 3, "reserved": 0},
    "SPROCKET-3": {"name": "Sprocket", "on_hand": 0, "reserved": 0},
}


def build_server(stock: dict[str, dict[str, Any]] | None = None) -> MCPServer[Any]:
    """The inventory server over ``stock`` (a copy of ``STOCK`` when not given)."""
    table = {sku: dict(item) for sku, item in (stock or STOCK).items()}
    server: MCPServer[Any] = MCPServer("inventory", instructions="Stock levels and reservations by SKU.")

    @server.tool(description="Look up one SKU: its name, units on hand, reserved and available.")
    def lookup(sku: str) -> dict[str, Any]:
        item = table.get(sku.upper())
        if item is None:
            raise ToolError(f"unknown sku '{sku}'")
        return {"sku": sku.upper(), **item, "available": item["on_hand"] - item["reserved"]}

    @server.tool(description="Reserve qty units of a SKU; fails when fewer are available.")
    def reserve(sku: str, qty: int) -> dict[str, Any]:
        item = table.get(sku.upper())
        if item is None:
            raise ToolError(f"unknown sku '{sku}'")
        available = item["on_hand"] - item["reserved"]
        if qty < 1 or qty > available:
            raise ToolError(f"cannot reserve {qty} of '{sku}': {available} available")
        item["reserved"] += qty
        return {"sku": sku.upper(), "reserved": qty, "available": available - qty}

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    build_server().run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
