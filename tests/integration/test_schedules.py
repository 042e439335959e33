"""Schedules start missions at their fire times exactly once, across two orchestrator replicas and
restarts; pause stops them, catch-up runs what a restart missed, and the overlap policies behave as
Temporal documents them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.common.settings import Settings
from tests.conftest import API_KEY, RunningApp, db_fetch, running_apps, wait_for

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
TICK = {"name": "tick", "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.n }}"}}]}
GATED = {"name": "gated", "steps": [{"id": "hold", "agent": "echo", "input": {}}]}  # echo, made to await approval
NEVER = "0 0 1 1 *"  # once a year: only manual fires in the overlap tests


def orchestrator(settings: Settings) -> Any:
    from services.orchestrator.app import create_app

    return create_app(settings)


def worker(settings: Settings) -> Any:
    from services.worker.app import create_app

    return create_app(settings)


def sandbox(settings: Settings) -> Any:
    from services.sandbox.app import create_app

    return create_app(settings)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, list[RunningApp]]]:
    """Two orchestrator replicas, a worker and a sandbox; a client of the first orchestrator."""
    async with running_apps(settings, sandbox, orchestrator, orchestrator, worker) as apps:
        async with httpx.AsyncClient(base_url=apps[1].url, headers=HEADERS, timeout=30) as client:
            assert (await client.put("/v1/agents/echo", json=_gate())).status_code in (200, 201)
            for workflow in (TICK, GATED):
                response = await client.post("/v1/workflows", json=workflow)
                assert response.status_code == 201, response.text
            yield client, apps


def _gate() -> dict[str, Any]:
    return {
        "model": "offline",
        "description": "Holds its mission until approved.",
        "approval_policy": "approval_required",
    }


async def fires_of(settings: Settings, name: str) -> list[Any]:
    return await db_fetch(
        settings,
        "SELECT f.fire_time, f.kind, f.outcome, f.mission_id FROM schedule_fires f "
        "JOIN schedules s ON s.id = f.schedule_id WHERE s.name = $1 ORDER BY f.fire_time",
        name,
    )


async def test_an_interval_schedule_fires_once_per_fire_time_across_replicas_and_a_restart(
    settings: Settings, api: tuple[httpx.AsyncClient, list[RunningApp]]
) -> None:
    client, apps = api
    created = await client.post(
        "/v1/schedules",
        json={
            "name": "every-2s",
            "workflow": "tick",
            "interval_s": 2,
            "jitter_s": 0.5,
            "input": {"n": 1},
            "overlap": "allow_all",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    upcoming = [datetime.fromisoformat(t) for t in body["next_fire_times"]]
    assert len(upcoming) == 5 and all(t.timestamp() % 2 == 0 for t in upcoming)
    assert [b - a for a, b in itertools.pairwise(upcoming)] == [timedelta(seconds=2)] * 4

    # 20 s of firing with both replicas up: 10 fire times, each once.
    first = upcoming[0]

    async def ten_fired() -> bool:
        return len(await fires_of(settings, "every-2s")) >= 10

    await wait_for(ten_fired, timeout_s=40, interval_s=0.2, what="ten fire times")

    # Both replicas stop: fire times pass with nobody to fire them; one replica comes back inside
    # the catch-up window (an hour) and runs them late.
    for app in apps[1:3]:
        await app.stop()
    down_from = datetime.now(UTC)
    await asyncio.sleep(5)  # the outage: fire times go by unhandled
    async with running_apps(settings, orchestrator) as (again,):
        back_at = datetime.now(UTC)

        async def caught_up() -> bool:
            fires = await fires_of(settings, "every-2s")
            return bool(fires) and fires[-1]["fire_time"] > back_at + timedelta(seconds=2)

        await wait_for(caught_up, timeout_s=20, interval_s=0.2, what="the missed fire times to run")
        async with httpx.AsyncClient(base_url=again.url, headers=HEADERS, timeout=30) as client2:
            paused = await client2.post("/v1/schedules/every-2s/pause")
            assert paused.status_code == 200 and paused.json()["paused"] is True
            assert paused.json()["next_fire_times"] == []
            count_at_pause = len(await fires_of(settings, "every-2s"))
            await asyncio.sleep(4.5)  # two fire times go by while paused
            assert len(await fires_of(settings, "every-2s")) == count_at_pause, "a paused schedule fired"

            fires = await fires_of(settings, "every-2s")
            times = [row["fire_time"] for row in fires]
            assert times[0] == first
            steps = [b - a for a, b in itertools.pairwise(times)]
            assert steps == [timedelta(seconds=2)] * len(steps), "a fire time was skipped or doubled"
            assert {row["outcome"] for row in fires} == {"started"}
            missed_while_down = [t for t in times if down_from < t < back_at]
            assert len(missed_while_down) >= 2, "the outage's fire times ran after the restart"

            # One mission per fire time, each saying why it started.
            missions = await db_fetch(
                settings, "SELECT id, trigger FROM missions WHERE trigger ->> 'name' = 'every-2s'"
            )
            assert len(missions) == len(fires)
            assert len({m["trigger"] for m in missions}) == len(missions)
            sample = fires[-1]["mission_id"]
            mission = (await client2.get(f"/v1/missions/{sample}")).json()
            assert mission["trigger"] == {
                "type": "schedule",
                "name": "every-2s",
                "fire_time": times[-1].isoformat().replace("+00:00", "Z"),
            }
            timeline = (await client2.get(f"/v1/missions/{sample}/timeline")).json()
            assert timeline[0]["type"] == "mission.submitted" and timeline[0]["data"]["trigger"]["type"] == "schedule"
            listed = (
                await client2.get("/v1/missions", params={"trigger": "schedule", "trigger_name": "every-2s"})
            ).json()
            assert len(listed["items"]) == min(50, len(fires))
            assert (await client2.get("/v1/missions", params={"trigger": "webhook"})).json()["items"] == []

            metrics = (await client2.get("/metrics")).text
            assert 'coo_schedule_fires_total{outcome="started",schedule="every-2s"}' in metrics
            assert 'coo_schedule_lag_seconds_count{schedule="every-2s"}' in metrics


async def test_fire_times_older_than_the_catchup_window_are_recorded_as_missed(
    settings: Settings, api: tuple[httpx.AsyncClient, list[RunningApp]]
) -> None:
    client, apps = api
    created = await client.post(
        "/v1/schedules",
        json={"name": "short-window", "workflow": "tick", "interval_s": 1, "catchup_window_s": 1, "input": {"n": 2}},
    )
    assert created.status_code == 201, created.text
    for app in apps[1:3]:
        await app.stop()
    await asyncio.sleep(4)  # fire times go by, older than the one-second window by the restart
    async with running_apps(settings, orchestrator):

        async def recorded() -> bool:
            fires = await fires_of(settings, "short-window")
            return any(row["outcome"] == "missed" for row in fires) and fires[-1]["outcome"] != "missed"

        await wait_for(recorded, timeout_s=20, interval_s=0.2, what="missed fire times recorded")
    fires = await fires_of(settings, "short-window")
    missed = [row for row in fires if row["outcome"] == "missed"]
    assert all(row["mission_id"] is None for row in missed)
    missions = await db_fetch(settings, "SELECT count(*) AS n FROM missions WHERE trigger ->> 'name' = 'short-window'")
    assert missions[0]["n"] == len([row for row in fires if row["outcome"] == "started"])


async def _approve(client: httpx.AsyncClient, mission_id: str) -> None:
    async def waiting() -> bool:
        mission = (await client.get(f"/v1/missions/{mission_id}")).json()
        return mission["steps"][0]["status"] == "awaiting_approval"

    await wait_for(waiting, timeout_s=20, what="the step to await approval")
    approved = await client.post(f"/v1/missions/{mission_id}/steps/hold/approve", json={})
    assert approved.status_code == 200, approved.text


async def _fire(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.post(f"/v1/schedules/{name}/trigger")
    assert response.status_code == 200, response.text
    fire: dict[str, Any] = response.json()["fires"][0]
    return fire


async def _mission_status(client: httpx.AsyncClient, mission_id: str) -> str:
    status: str = (await client.get(f"/v1/missions/{mission_id}")).json()["status"]
    return status


async def test_overlap_skip_buffer_one_cancel_other_and_allow_all(
    api: tuple[httpx.AsyncClient, list[RunningApp]],
) -> None:
    client, _ = api
    for overlap in ("skip", "buffer_one", "cancel_other", "allow_all"):
        response = await client.post(
            "/v1/schedules",
            json={"name": overlap.replace("_", "-"), "workflow": "gated", "cron": NEVER, "overlap": overlap},
        )
        assert response.status_code == 201, response.text

    # skip: while the last mission is active, a fire time is skipped; once it ends, the next starts.
    first = await _fire(client, "skip")
    assert first["outcome"] == "started"
    assert (await _fire(client, "skip"))["outcome"] == "skipped"
    await _approve(client, first["mission_id"])
    await wait_for(lambda: _is(client, first["mission_id"], "succeeded"), timeout_s=20, what="the first to end")
    assert (await _fire(client, "skip"))["outcome"] == "started"

    # buffer_one: one fire time waits for the running mission and starts when it ends; a second
    # one while it waits is skipped.
    first = await _fire(client, "buffer-one")
    buffered = await _fire(client, "buffer-one")
    assert buffered["outcome"] == "buffered" and buffered["mission_id"] is None
    assert (await _fire(client, "buffer-one"))["outcome"] == "skipped"
    shown = (await client.get("/v1/schedules/buffer-one")).json()
    assert shown["buffered_fire_time"] == buffered["fire_time"]
    await _approve(client, first["mission_id"])

    async def buffered_started() -> bool:
        fires = (await client.get("/v1/schedules/buffer-one")).json()["recent_fires"]
        return any(f["fire_time"] == buffered["fire_time"] and f["outcome"] == "started" for f in fires)

    await wait_for(buffered_started, timeout_s=20, what="the buffered fire time to start")
    shown = (await client.get("/v1/schedules/buffer-one")).json()
    assert shown["buffered_fire_time"] is None

    # cancel_other: the running mission is cancelled and the new one starts.
    first = await _fire(client, "cancel-other")
    second = await _fire(client, "cancel-other")
    assert second["outcome"] == "started" and second["mission_id"] != first["mission_id"]
    assert await _mission_status(client, first["mission_id"]) == "cancelled"

    # allow_all: both run.
    first = await _fire(client, "allow-all")
    second = await _fire(client, "allow-all")
    assert first["outcome"] == second["outcome"] == "started"
    assert await _mission_status(client, first["mission_id"]) in ("queued", "running")


async def _is(client: httpx.AsyncClient, mission_id: str, status: str) -> bool:
    return await _mission_status(client, mission_id) == status


async def test_backfill_runs_each_fire_time_of_the_range_once_by_the_overlap_policy(
    api: tuple[httpx.AsyncClient, list[RunningApp]],
) -> None:
    client, _ = api
    created = await client.post(
        "/v1/schedules",
        json={"name": "hourly", "workflow": "tick", "cron": "0 * * * *", "overlap": "allow_all", "input": {"n": 3}},
    )
    assert created.status_code == 201
    window = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"}
    filled = await client.post("/v1/schedules/hourly/backfill", json=window)
    assert filled.status_code == 200, filled.text
    fires = filled.json()["fires"]
    assert [f["fire_time"] for f in fires] == [f"2026-01-01T0{h}:00:00Z" for h in range(4)]
    assert {f["outcome"] for f in fires} == {"started"} and {f["kind"] for f in fires} == {"backfill"}
    again = (await client.post("/v1/schedules/hourly/backfill", json=window)).json()["fires"]
    assert [f["mission_id"] for f in again] == [f["mission_id"] for f in fires], "a backfill twice starts nothing new"

    # skip: a backfill's fire times overlap each other; the first starts, the rest are skipped.
    async def all_ended() -> bool:
        listed = (await client.get("/v1/missions", params={"trigger_name": "hourly"})).json()["items"]
        return len(listed) == 4 and all(m["status"] == "succeeded" for m in listed)

    await wait_for(all_ended, timeout_s=30, what="the backfilled missions to end")
    await client.patch("/v1/schedules/hourly", json={"overlap": "skip", "workflow": "gated"})
    skipped = (
        await client.post(
            "/v1/schedules/hourly/backfill", json={"start": "2026-02-01T00:00:00Z", "end": "2026-02-01T02:00:00Z"}
        )
    ).json()["fires"]
    assert [f["outcome"] for f in skipped] == ["started", "skipped", "skipped"]


async def test_schedule_requests_are_checked(api: tuple[httpx.AsyncClient, list[RunningApp]]) -> None:
    client, _ = api
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "a", "workflow": "tick", "cron": "61 * * * *"}, "cron"),
        ({"name": "a", "workflow": "tick", "cron": "* * *"}, "cron"),
        ({"name": "a", "workflow": "tick", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "a", "workflow": "tick"}, "body"),
        ({"name": "a", "workflow": "tick", "cron": "0 3 * * *", "interval_s": 60}, "body"),
        ({"name": "a", "workflow": "nope", "cron": "0 3 * * *"}, "workflow"),
        ({"name": "a b", "workflow": "tick", "cron": "0 3 * * *"}, "name"),
        ({"name": "a", "workflow": "tick", "interval_s": 0.5}, "interval_s"),
        ({"name": "a", "workflow": "tick", "cron": "0 3 * * *", "overlap": "sometimes"}, "overlap"),
    ]
    for body, field in cases:
        response = await client.post("/v1/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, (body, response.json())
    good = {"name": "nightly", "workflow": "tick", "cron": "0 3 * * *", "timezone": "Europe/Paris"}
    assert (await client.post("/v1/schedules", json=good)).status_code == 201
    assert (await client.post("/v1/schedules", json=good)).status_code == 409
    times = (await client.get("/v1/schedules/nightly")).json()["next_fire_times"]
    assert all(datetime.fromisoformat(t).astimezone().utcoffset() is not None for t in times)
    assert (await client.get("/v1/schedules/unknown")).status_code == 404
    assert (
        await client.post(
            "/v1/schedules/nightly/backfill", json={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
        )
    ).status_code == 422
    changed = await client.patch("/v1/schedules/nightly", json={"interval_s": 3600})
    assert changed.status_code == 200 and changed.json()["cron"] is None and changed.json()["interval_s"] == 3600
    assert (await client.patch("/v1/schedules/nightly", json={"timezone": None})).status_code == 422
    assert (await client.delete("/v1/schedules/nightly")).status_code == 204
    assert [s["name"] for s in (await client.get("/v1/schedules")).json()] == []
