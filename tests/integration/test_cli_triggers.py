"""The CLI's schedules, triggers and events commands, against a running orchestrator: what a user
sees (output and exit codes) when creating, listing, pausing, firing and backfilling schedules,
creating and deleting triggers, and sending an event twice."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY, Stack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
MISSION = re.compile(r"mission ([0-9a-f-]{36})")


async def _coo(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
            "COO_API_URL": stack.orchestrator.url,
            "COO_API_KEY": API_KEY,
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _register_hello(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post(
            "/v1/workflows",
            content=(EXAMPLES / "hello.yaml").read_bytes(),
            headers={"Content-Type": "application/yaml"},
        )
        assert response.status_code == 201, response.text


async def test_schedules_create_list_show_pause_resume_trigger_backfill_delete(stack: Stack, tmp_path: Path) -> None:
    await _register_hello(stack)
    hourly = await _coo(
        stack,
        *("schedules", "create", "--name", "hourly", "--workflow", "hello", "--every", "3600"),
        *("--input", '{"text": "a b\\n"}', "--overlap", "allow_all"),
    )
    assert hourly.returncode == 0, hourly.stderr
    assert "created schedule hourly" in hourly.stdout and "every 3600s" in hourly.stdout

    spec = tmp_path / "nightly.yaml"
    spec.write_text(
        "name: nightly\nworkflow: hello\ncron: '0 3 * * *'\ntimezone: Europe/Paris\ninput: {text: night}\njitter_s: 5\n"
    )
    nightly = await _coo(stack, "schedules", "create", "-f", str(spec), "--paused")
    assert nightly.returncode == 0, nightly.stderr
    assert "0 3 * * * (Europe/Paris)" in nightly.stdout and "(paused)" in nightly.stdout

    listed = await _coo(stack, "schedules", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "WORKFLOW", "CADENCE", "OVERLAP"] and "LAST FIRE" in header
    (hourly_row,) = [row for row in rows if row.startswith("hourly")]
    (nightly_row,) = [row for row in rows if row.startswith("nightly")]
    assert "every 3600s" in hourly_row and "allow_all" in hourly_row and " no " in hourly_row
    assert "0 3 * * * (Europe/Paris)" in nightly_row and "skip" in nightly_row and " yes " in nightly_row

    shown = await _coo(stack, "schedules", "show", "hourly")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = lines.index("next fire times:")
    assert all(line.strip().endswith(":00:00Z") for line in lines[at + 1 : at + 6])
    assert lines[at + 6] == "recent fires: none yet"

    paused = await _coo(stack, "schedules", "pause", "hourly")
    assert paused.returncode == 0 and "schedule hourly paused" in paused.stdout
    assert "next fire times: none (paused)" in (await _coo(stack, "schedules", "show", "hourly")).stdout
    resumed = await _coo(stack, "schedules", "resume", "hourly")
    assert resumed.returncode == 0 and "schedule hourly resumed; next fire 20" in resumed.stdout

    fired = await _coo(stack, "schedules", "trigger", "hourly")
    assert fired.returncode == 0, fired.stderr
    assert "1 fire time(s), 1 mission(s)" in fired.stdout and "manual" in fired.stdout
    assert MISSION.search(fired.stdout)

    backfill = await _coo(
        stack, "schedules", "backfill", "hourly", "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-01T02:00:00Z"
    )
    assert backfill.returncode == 0, backfill.stderr
    assert "3 fire time(s), 3 mission(s)" in backfill.stdout
    assert [line.split()[0] for line in backfill.stdout.splitlines()[1:]] == [
        "2025-01-01T00:00:00Z",
        "2025-01-01T01:00:00Z",
        "2025-01-01T02:00:00Z",
    ]
    assert backfill.stdout.count("backfill  started") == 3

    recent = await _coo(stack, "schedules", "show", "hourly")
    assert "manual    started  mission" in recent.stdout and recent.stdout.count("backfill  started") == 3
    assert "started" in (await _coo(stack, "schedules", "list")).stdout

    deleted = await _coo(stack, "schedules", "delete", "nightly")
    assert deleted.returncode == 0 and "deleted schedule nightly" in deleted.stdout
    gone = await _coo(stack, "schedules", "show", "nightly")
    assert gone.returncode == 1 and "404" in gone.stderr and "schedule 'nightly' not found" in gone.stderr


async def test_schedule_mistakes_are_named(stack: Stack) -> None:
    await _register_hello(stack)
    bad_cron = await _coo(stack, "schedules", "create", "--name", "bad", "--workflow", "hello", "--cron", "61 * * * *")
    assert bad_cron.returncode == 1 and "422" in bad_cron.stderr
    assert "cron: '61 * * * *' is not a valid expression" in bad_cron.stderr
    both = await _coo(
        stack, "schedules", "create", "--name", "x", "--workflow", "hello", "--cron", "* * * * *", "--every", "60"
    )
    assert both.returncode == 2 and "give --cron or --every, not both" in both.stderr
    no_cadence = await _coo(stack, "schedules", "create", "--name", "x", "--workflow", "hello")
    assert no_cadence.returncode == 2 and "--cron EXPR or --every SECONDS" in no_cadence.stderr
    bad_input = await _coo(
        stack, "schedules", "create", "--name", "x", "--workflow", "hello", "--every", "60", "--input", "[1]"
    )
    assert bad_input.returncode == 2 and "--input must be a JSON object" in bad_input.stderr
    assert "no schedules" in (await _coo(stack, "schedules", "list")).stdout


async def test_triggers_and_events(stack: Stack, tmp_path: Path) -> None:
    await _register_hello(stack)
    secret = "s3cret-webhook-key-0123456789"
    created = await _coo(
        stack,
        *("triggers", "create", "--name", "on-push", "--event", "push", "--workflow", "hello"),
        *("--input", '{"text": "{{ event.payload.text }}"}', "--filter", "event.payload.ref == 'main'"),
        *("--secret-env", "PUSH_SECRET"),
        env={"PUSH_SECRET": secret},
    )
    assert created.returncode == 0, created.stderr
    assert "created trigger on-push" in created.stdout
    assert "POST /webhooks/triggers/on-push (signed)" in created.stdout and secret not in created.stdout

    payload = tmp_path / "trigger.json"
    payload.write_text('{"name": "on-tag", "event": "tag", "workflow": "nope", "secret": "0123456789abcdef"}')
    in_file = await _coo(stack, "triggers", "create", "-f", str(payload))
    assert in_file.returncode == 2 and "keep the secret out of the file" in in_file.stderr
    payload.write_text('{"name": "on-tag", "event": "tag", "workflow": "nope"}')
    unknown = await _coo(stack, "triggers", "create", "-f", str(payload))
    assert unknown.returncode == 1 and "workflow:" in unknown.stderr and "422" in unknown.stderr
    overridden = await _coo(stack, "triggers", "create", "-f", str(payload), "--workflow", "hello")
    assert overridden.returncode == 0, overridden.stderr
    assert "webhook   none (no secret)" in overridden.stdout

    listed = await _coo(stack, "triggers", "list")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert [row.split()[:3] for row in rows] == [["on-push", "push", "hello"], ["on-tag", "tag", "hello"]]

    first = await _coo(stack, "events", "send", "push", "--id", "d-1", "--payload", '{"ref": "main", "text": "a b"}')
    assert first.returncode == 0, first.stderr
    assert "event push d-1: 1 mission(s) started" in first.stdout and "trigger on-push: started" in first.stdout
    missions = MISSION.findall(first.stdout)
    assert len(set(missions)) == 1

    again = await _coo(stack, "events", "send", "push", "--id", "d-1", "--payload", '{"ref": "main", "text": "a b"}')
    assert again.returncode == 0, again.stderr
    assert "duplicate: nothing new started" in again.stdout and set(MISSION.findall(again.stdout)) == set(missions)

    other = tmp_path / "payload.json"
    other.write_text('{"ref": "dev", "text": "x"}')
    ignored = await _coo(stack, "events", "send", "push", "--id", "d-2", "--payload", f"@{other}")
    assert ignored.returncode == 0 and "0 mission(s) started" in ignored.stdout and "ignored" in ignored.stdout
    changed = await _coo(stack, "events", "send", "push", "--id", "d-1", "--payload", "{}")
    assert changed.returncode == 1 and "409" in changed.stderr and "another event or payload" in changed.stderr

    shown = await _coo(stack, "triggers", "show", "on-push")
    assert shown.returncode == 0, shown.stderr
    assert "filter    event.payload.ref == 'main'" in shown.stdout and secret not in shown.stdout
    deliveries = shown.stdout.split("recent deliveries:")[1]
    assert re.search(rf"event\s+d-1\s+started\s+mission {missions[0]}", deliveries)
    assert re.search(r"event\s+d-2\s+ignored", deliveries)

    deleted = await _coo(stack, "triggers", "delete", "on-push")
    assert deleted.returncode == 0 and "deleted trigger on-push" in deleted.stdout
    assert [row.split()[0] for row in (await _coo(stack, "triggers", "list")).stdout.splitlines()[1:]] == ["on-tag"]
    missing = await _coo(stack, "triggers", "show", "on-push")
    assert missing.returncode == 1 and "trigger 'on-push' not found" in missing.stderr
