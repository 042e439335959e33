"""Path and query parameters that Postgres cannot store are refused with a 422 naming them."""

from __future__ import annotations

from fastapi import Request

from services.orchestrator.storable import require_storable


async def storable_params(request: Request) -> None:
    """Router dependency: path and query parameters must be storable too."""
    for name, value in request.path_params.items():
        require_storable(value, f"path.{name}")
    for name, value in request.query_params.multi_items():
        require_storable(value, f"query.{name}")
