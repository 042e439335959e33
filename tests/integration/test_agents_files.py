"""Agents as files: `coo agents apply|list|get` through the REST API, a custom agent run on the
offline model, and the example agents seeded at start-up (created, updated from an edited file,
never over an API change, a bad file logged and skipped)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from structlog.testing import capture_logs

from services.common.settings import Settings
from tests.conftest import (
    Infra,
    Stack,
    delete_streams,
    drop_schema,
    make_settings,
    start_stack,
    stop_stack,
    wait_for,
)
from tests.integration.test_cli import _coo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TRIAGE = """\
name: triage
description: Sorts an incoming report into a queue.
model: offline
system_prompt: |
  Read the report and answer with its queue and severity.
output_schema:
  type: object
  required: [queue, severity, labels, summary]
  properties:
    queue: {enum: [billing, outages, other]}
    severity: {type: integer, minimum: 1, maximum: 5}
    labels: {type: array, items: {type: string, minLength: 2}, minItems: 2, uniqueItems: true}
    summary:
      type: object
      required: [title, words]
      properties:
        title: {type: string, minLength: 10}
        words: {type: integer, exclusiveMinimum: 0}
    report: {type: string}
"""
WORKFLOW = {
    "name": "triage-flow",
    "steps": [{"id": "triage", "agent": "triage", "input": {"report": "{{ input.report }}"}}],
}


async def test_a_custom_agent_applied_from_a_file_runs_on_the_offline_model(stack: Stack, tmp_path: Path) -> None:
    agent_file = tmp_path / "triage.yaml"
    agent_file.write_text(TRIAGE)
    created = await _coo(stack, "agents", "apply", str(agent_file))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "triage: created (version 1)"

    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=WORKFLOW)).status_code == 201
        accepted = await client.post(
            "/v1/missions", json={"workflow": "triage-flow", "input": {"report": "It is down"}}
        )
        mission_id = accepted.json()["id"]

        async def finished() -> dict[str, Any] | None:
            mission: dict[str, Any] = (await client.get(f"/v1/missions/{mission_id}")).json()
            return mission if mission["status"] in ("succeeded", "failed", "cancelled") else None

        mission = await wait_for(finished, timeout_s=60, what="the triage mission")
        assert mission["status"] == "succeeded", mission
        (result,) = (await client.get(f"/v1/missions/{mission_id}/steps/triage/results")).json()
    schema = yaml.safe_load(TRIAGE)["output_schema"]
    assert list(Draft202012Validator(schema).iter_errors(result["output"])) == []
    assert result["output"]["report"] == "It is down"  # the input's value, where it fits the schema
    assert result["model"] == "offline" and result["provider"] == "offline"

    again = await _coo(stack, "agents", "apply", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "triage: unchanged (version 1)"

    edited = TRIAGE.replace("Sorts an incoming report", "Sorts a report").replace(
        "{type: integer, minimum: 1", "{type: integer, minimum: 2"
    )
    agent_file.write_text(
        edited.replace("system_prompt: |\n  Read the report and answer with its queue and severity.\n", "")
    )
    changed = await _coo(stack, "agents", "apply", str(agent_file))
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "triage: updated: description, system_prompt, output_schema (version 2)"

    listed = await _coo(stack, "agents", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "MODEL", "VERSION"]
    assert any(row.split()[:3] == ["triage", "offline", "2"] for row in rows), listed.stdout
    assert any(row.split()[0] == "echo" for row in rows)  # a seeded example

    got = await _coo(stack, "agents", "get", "triage")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("# version 2, updated ")
    as_file = yaml.safe_load(got.stdout)
    assert as_file["name"] == "triage" and as_file["description"] == "Sorts a report into a queue."
    assert as_file["output_schema"]["properties"]["severity"]["minimum"] == 2
    (tmp_path / "triage.yaml").write_text(got.stdout)
    back = await _coo(stack, "agents", "apply", str(tmp_path / "triage.yaml"))
    assert back.stdout.strip() == "triage: unchanged (version 2)", back.stderr

    missing = await _coo(stack, "agents", "get", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr


async def test_apply_names_a_bad_file_and_its_field_after_applying_the_good_ones(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "a-bad.yaml").write_text("name: bad-one\nmodel: offline\ncolour: red\n")
    (tmp_path / "b-good.yaml").write_text("name: good-one\nmodel: offline\n")
    (tmp_path / "c-nameless.yaml").write_text("model: offline\n")
    (tmp_path / "d-broken.yaml").write_text("name: [\n")
    (tmp_path / "e-other.yaml").write_text("name: other\nmodel: offline\ntools: run_command\n")
    done = await _coo(stack, "agents", "apply", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.strip() == "good-one: created (version 1)"
    errors = done.stderr.splitlines()
    assert errors[0].startswith(f"error: {tmp_path / 'a-bad.yaml'}: colour: ")
    assert errors[1].startswith(f"error: {tmp_path / 'c-nameless.yaml'}: name: is required")
    assert errors[2].startswith(f"error: {tmp_path / 'd-broken.yaml'}: file: cannot read it")
    assert any(line.startswith(f"error: {tmp_path / 'e-other.yaml'}: tools: ") for line in errors), errors
    async with stack.client() as client:
        assert (await client.get("/v1/agents/bad-one")).status_code == 404


async def test_a_name_in_the_body_must_be_the_paths(stack: Stack) -> None:
    async with stack.client() as client:
        same = await client.put("/v1/agents/named", json={"name": "named", "model": "offline"})
        assert same.status_code == 200 and same.json()["name"] == "named"
        other = await client.put("/v1/agents/named", json={"name": "other", "model": "offline"})
        assert other.status_code == 422 and other.json()["error"]["field"] == "name"
        assert (await client.get("/v1/agents/other")).status_code == 404


def _examples(tmp_path: Path) -> Path:
    examples = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "agents", examples / "agents")
    return examples


async def test_seeding_skips_a_bad_file_updates_an_edited_one_and_keeps_api_changes(
    infra: Infra, tmp_path: Path
) -> None:
    from services.common.db.migrate import upgrade_async

    examples = _examples(tmp_path)
    (examples / "agents" / "broken.yaml").write_text("name: [\n")
    (examples / "agents" / "unknown-field.yaml").write_text("name: odd\nmodel: offline\ncolour: red\n")
    settings: Settings = make_settings(infra, tmp_path, examples_dir=examples)
    await upgrade_async(settings)
    try:
        with capture_logs() as logs:
            stack = await start_stack(settings)
        try:
            invalid = {(e["path"], e["field"]) for e in logs if e["event"] == "agent_file_invalid"}
            assert invalid == {
                (str(examples / "agents" / "broken.yaml"), "file"),
                (str(examples / "agents" / "unknown-field.yaml"), "colour"),
            }
            async with stack.client() as client:
                echo = (await client.get("/v1/agents/echo")).json()
                assert echo["version"] == 1
                assert (await client.get("/v1/agents/odd")).status_code == 404
                assert (await client.get("/readyz")).status_code == 200
                # line-counter is changed through the API: its file no longer decides it
                put = await client.put("/v1/agents/line-counter", json={"model": "offline", "description": "mine"})
                assert put.status_code == 200
        finally:
            await stop_stack(stack)

        echo_file = examples / "agents" / "echo.yaml"
        echo_file.write_text(echo_file.read_text().replace("description:", "description: Edited.", 1))
        counter_file = examples / "agents" / "line-counter.yaml"
        counter_file.write_text(counter_file.read_text().replace("description:", "description: Edited.", 1))
        with capture_logs() as logs:
            stack = await start_stack(settings)
        try:
            async with stack.client() as client:
                echo = (await client.get("/v1/agents/echo")).json()
                assert echo["version"] == 2 and echo["description"].startswith("Edited.")
                counter = (await client.get("/v1/agents/line-counter")).json()
                assert counter["version"] == 2 and counter["description"] == "mine"
            updated = [e for e in logs if e["event"] == "agent_seed_updated"]
            assert [(e["agent"], e["fields"]) for e in updated] == [("echo", ["description"])]
            skipped = [e for e in logs if e["event"] == "agent_seed_skipped"]
            assert [e["agent"] for e in skipped] == ["line-counter"]
        finally:
            await stop_stack(stack)

        with capture_logs() as logs:  # a third start with nothing edited changes nothing
            stack = await start_stack(settings)
        try:
            async with stack.client() as client:
                assert (await client.get("/v1/agents/echo")).json()["version"] == 2
            assert not [e for e in logs if e["event"] == "agent_seed_updated"]
        finally:
            await stop_stack(stack)
    finally:
        await drop_schema(infra.database_url, settings.db_schema)
        await delete_streams(infra.nats_url, settings.bus_prefix)
