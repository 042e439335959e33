"""B7's baseline: a bare FastAPI hello route, served by uvicorn like COO's services are."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
