"""The Temporal peer's workflows and activity (only temporalio imports: the workflow sandbox
re-imports this module)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

TIMEOUT = timedelta(seconds=60)
FANOUT_WIDTH = 100


@activity.defn(name="echo")
async def echo(value: Any) -> Any:
    return value


@workflow.defn(name="OneStep")
class OneStep:
    @workflow.run
    async def run(self, value: Any) -> Any:
        return await workflow.execute_activity(echo, value, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="Chain3")
class Chain3:
    @workflow.run
    async def run(self, value: Any) -> Any:
        a = await workflow.execute_activity(echo, value, start_to_close_timeout=TIMEOUT)
        b = await workflow.execute_activity(echo, a, start_to_close_timeout=TIMEOUT)
        return await workflow.execute_activity(echo, b, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="Fanout")
class Fanout:
    @workflow.run
    async def run(self, value: Any) -> list[Any]:
        del value
        calls = [workflow.execute_activity(echo, j, start_to_close_timeout=TIMEOUT) for j in range(FANOUT_WIDTH)]
        return list(await asyncio.gather(*calls))


WORKFLOWS: dict[str, Any] = {"one_step": OneStep, "chain3": Chain3, "fanout": Fanout}
