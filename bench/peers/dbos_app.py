"""The DBOS peer's workflows (imported only by the DBOS driver process)."""

from __future__ import annotations

from typing import Any

from dbos import DBOS, SetWorkflowID

FANOUT_QUEUE = "bench_fanout"
FANOUT_WIDTH = 100


@DBOS.step()
def echo_step(value: Any) -> Any:
    return value


@DBOS.workflow()
def one_step(value: Any) -> Any:
    return echo_step(value)


@DBOS.workflow()
def chain3(value: Any) -> Any:
    return echo_step(echo_step(echo_step(value)))


@DBOS.workflow()
def fanout(value: Any) -> list[Any]:
    del value  # every item has the same shape; the input only identifies it
    queue = DBOS.retrieve_queue(FANOUT_QUEUE)
    assert queue is not None
    handles = [queue.enqueue(one_step, j) for j in range(FANOUT_WIDTH)]
    return [h.get_result() for h in handles]


WORKFLOWS = {"one_step": one_step, "chain3": chain3, "fanout": fanout}


def launch(system_database_url: str) -> None:
    DBOS(config={"name": "coo-bench", "system_database_url": system_database_url, "log_level": "WARNING"})
    DBOS.launch()
    DBOS.register_queue(FANOUT_QUEUE)


def start(kind: str, workflow_id: str, value: Any) -> None:
    with SetWorkflowID(workflow_id):
        DBOS.start_workflow(WORKFLOWS[kind], value)


def shutdown() -> None:
    DBOS.destroy()
