"""The API fuzzed from its own OpenAPI schema with every check and phase (examples, coverage,
fuzzing, stateful through its links): no 5xx, every answer documented and matching its schema,
what the schema allows accepted and what it forbids refused, every reference resolvable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, wait_for
from tests.e2e.processes import Services

pytestmark = pytest.mark.e2e

WORKFLOW = {"name": "hello", "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}}]}

# What the schema cannot say, said to schemathesis (anything else is the document's to get right).
CONFIG = """
# Postgres cannot store NUL: every route refuses it with a 422 naming the field.
[generation]
allow-x00 = false

# These check what no JSON Schema can say: that the workflow named exists, that a key expires in
# the future, that a backfill ends after it starts, that a change gives at most one cadence. A
# schema-valid request may get their 422, which names the field.
# So do a workflow definition's (its agents must exist, its steps form a DAG) and an agent's (the
# name in the body must be the path's).
[[operations]]
include-operation-id = [
  "create_schedule", "update_schedule", "backfill_schedule", "create_trigger", "create_api_key", "register_workflow",
  "put_agent",
]
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


async def test_the_api_keeps_to_its_openapi_document_under_every_check(services: Services, tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if cli is None:
        pytest.skip("schemathesis is not installed (make install installs it with the dev extras)")
    services.start("orchestrator", COO_ALERTMANAGER_TOKEN="fuzz-token-0123456789")  # the webhook is on
    await wait_for(lambda: services.ready("orchestrator"), timeout_s=60, what="orchestrator ready")
    base = services.url("orchestrator")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(  # noqa: ASYNC221 (a blocking child is what we want: the server is another process)
        [
            cli,
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "20",
            "--seed",
            "20261203",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            # the SSE stream stays open until its mission ends: fuzzing it would only wait
            "--exclude-path-regex",
            "/missions/.*/events$",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    tail = (run.stdout + run.stderr)[-20000:]
    assert run.returncode == 0, tail
    assert "Failures:" not in run.stdout and re.search(r"\b\d+ failures?\b", run.stdout) is None, tail
    assert "Unresolvable reference" not in run.stdout, tail
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", run.stdout), f"{phase} did not pass:\n{tail}"
    # Every operation but the SSE stream was fuzzed, the triggers' among them.
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert selected is not None and int(selected[1]) == int(selected[2]) - 1, tail
    async with httpx.AsyncClient() as client:
        document = (await client.get(f"{base}/openapi.json")).json()
    paths = document["paths"]
    operations = [op for methods in paths.values() for op in methods.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
    assert {"submit_mission", "rerun_mission", "get_mission", "list_missions"} <= set(ids)
    submitted = paths["/v1/missions"]["post"]["responses"]
    assert {"GetMission", "PauseMission", "ResumeMission", "CancelMission", "RerunMission"} <= set(
        submitted["202"]["links"]
    )
    for op in operations:  # every error answer is the shared error body
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and op["operationId"] != "get_readiness":
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    for route in (
        "/v1/schedules",
        "/v1/schedules/{name}/backfill",
        "/v1/triggers",
        "/v1/events",
        "/webhooks/triggers/{name}",
    ):
        assert route in paths, route
