"""An attempt iterates: when its checks fail, the agent (on the real anthropic SDK, against a local
Messages API) runs again in the same workspace with the failed checks' output, and the attempt
succeeds at the first iteration whose checks pass — one attempt, each iteration stored."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import API_KEY, Stack, db_fetch, wait_for
from tests.fakes.anthropic import FakeAnthropic, text, tool_use

CHECK = "grep -q '^ok$' result.txt || { echo 'result.txt must say ok, it says:'; cat result.txt; exit 3; }"


def workflow(max_iterations: int) -> dict[str, Any]:
    return {
        "name": f"fix-it-{max_iterations}",
        "steps": [
            {
                "id": "fix",
                "agent": "line-counter",  # any agent with run_command: the fake model plays it
                "input": {"task": "write ok to result.txt"},
                "timeout_s": 60,
                "retry": {"max_attempts": 2, "base": 0.1, "max": 0.2},
                "max_iterations": max_iterations,
                "checks": [
                    {"name": "says-ok", "kind": "test", "argv": ["sh", "-c", CHECK], "timeout_s": 10},
                    {"name": "exists", "argv": ["test", "-f", "result.txt"], "timeout_s": 10},
                ],
            }
        ],
    }


async def run(stack: Stack, max_iterations: int) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    async with stack.client() as client:
        body = workflow(max_iterations)
        assert (await client.post("/v1/workflows", json=body)).status_code == 201
        accepted = await client.post("/v1/missions", json={"workflow": body["name"], "input": {}})
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            mission = (await client.get(f"/v1/missions/{mission_id}")).json()
            return mission if mission["status"] in ("succeeded", "failed") else None

        mission = await wait_for(finished, timeout_s=60, what="the mission to finish")
        results = (await client.get(f"/v1/missions/{mission_id}/steps/fix/results")).json()
    return mission_id, mission, results


def write(content: str) -> Any:
    return tool_use("run_command", {"argv": ["sh", "-c", f"printf '{content}\\n' > result.txt"]})


async def test_a_failing_check_is_fixed_on_the_second_iteration_of_one_attempt(
    claude: tuple[Stack, FakeAnthropic],
) -> None:
    stack, fake = claude
    fake.queue(
        write("nearly"),
        text('{"done": true}', input_tokens=100, output_tokens=10),
        write("ok"),
        text('{"done": true, "fixed": "result.txt"}', input_tokens=300, output_tokens=20),
    )
    mission_id, mission, results = await run(stack, max_iterations=3)
    assert mission["status"] == "succeeded", mission
    assert mission["steps"][0]["attempt"] == 1, "one attempt, not two"
    assert mission["steps"][0]["output"] == {"done": True, "fixed": "result.txt"}

    # The third request (the second iteration's first) carries the failed check's report.
    assert len(fake.received) == 4
    told = fake.received[2].body["messages"][-1]
    assert told["role"] == "user"
    report = " ".join(block["text"] for block in told["content"] if block["type"] == "text")
    assert "iteration 1 of 3" in report
    assert "check 'says-ok' (test) failed, exit code 3" in report
    assert "result.txt must say ok, it says:\nnearly" in report
    assert "exists" not in report, "only failed checks are reported"

    (attempt,) = results
    assert attempt["success"] is True
    first, second = attempt["iterations"]
    assert (first["n"], first["verification"]["passed"], first["error_type"]) == (1, False, "TEST_FAILED")
    assert [c["passed"] for c in first["verification"]["checks"]] == [False, True]
    assert (second["n"], second["verification"]["passed"], second["error_type"]) == (2, True, None)
    assert first["output"] == {"done": True} and second["output"] == attempt["output"]
    assert [len(first["tool_calls"]), len(second["tool_calls"])] == [1, 1]
    assert first["tokens_in"] + second["tokens_in"] == attempt["tokens_in"]
    assert attempt["verification"]["passed"] is True
    print("stored iterations:", json.dumps(attempt["iterations"], indent=2))  # noqa: T201 (shown in the closing note)

    # The console shows the iterations one under the other, each with its verification report.
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20) as console:
        signed_in = await console.post("/console/sign-in", data={"api_key": API_KEY, "next": "/console"})
        assert signed_in.status_code == 303
        page = (await console.get(f"/console/missions/{mission_id}/steps/fix")).text
    assert page.index("Iteration 1") < page.index("Iteration 2")
    assert "TEST_FAILED" in page and "result.txt must say ok" in page

    events = await db_fetch(
        stack.settings,
        "SELECT type, data FROM timeline_events WHERE mission_id = $1 AND type = 'step.iteration' ORDER BY id",
        mission_id,
    )
    assert [json.loads(e["data"])["n"] for e in events] == [1, 2]
    assert [json.loads(e["data"])["passed"] for e in events] == [False, True]


async def test_iterations_that_run_out_fail_the_attempt_with_the_checks_kind(
    claude: tuple[Stack, FakeAnthropic],
) -> None:
    stack, fake = claude
    fake.queue(write("no"), text("{}"), write("still no"), text("{}"))
    _, mission, results = await run(stack, max_iterations=2)
    assert mission["status"] == "failed"
    step = mission["steps"][0]
    assert step["error"]["type"] == "TEST_FAILED" and step["attempt"] == 1, "not retried: the agent had its chances"
    (attempt,) = results
    assert [i["error_type"] for i in attempt["iterations"]] == ["TEST_FAILED", "TEST_FAILED"]


async def test_one_iteration_reads_as_a_list_of_one(claude: tuple[Stack, FakeAnthropic]) -> None:
    stack, fake = claude
    fake.queue(write("ok"), text('{"done": true}'))
    _, mission, results = await run(stack, max_iterations=1)
    assert mission["status"] == "succeeded"
    ((only,),) = [r["iterations"] for r in results]
    assert only["n"] == 1 and only["verification"]["passed"] is True and only["output"] == {"done": True}
    rows = await db_fetch(stack.settings, "SELECT iterations FROM agent_results")
    assert [r["iterations"] for r in rows] == [None], "one run stores no copy of itself"
