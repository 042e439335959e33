"""COO's Python client: ``from coo.client import Client, AsyncClient, ApiError``.

A light package (httpx and pydantic): it speaks COO's REST API and imports nothing of the services."""
