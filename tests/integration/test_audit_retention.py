"""Audit events past COO_AUDIT_RETENTION_DAYS, and trigger history past COO_TRIGGER_HISTORY_DAYS, are
deleted by the engine's housekeeping, in batches; newer ones stay, and 0 keeps everything."""

from __future__ import annotations

from typing import Any

from services.orchestrator.engine import housekeeping
from services.orchestrator.engine.housekeeping import Housekeeper
from tests.conftest import db_fetch

INSERT = """
INSERT INTO audit_events (id, created_at, key_name, scope, method, route, path, outcome)
SELECT gen_random_uuid(), now() - make_interval(days => $1), 'k', 'admin', 'POST', '/v1/keys', '/v1/keys', 201
FROM generate_series(1, $2)
"""


async def test_old_audit_events_are_pruned_in_batches(engine_parts: Any, monkeypatch: Any) -> None:
    settings, sessionmaker, bus = engine_parts
    await db_fetch(settings, INSERT, 500, 25)  # past the retention
    await db_fetch(settings, INSERT, 10, 3)  # within it
    monkeypatch.setattr(housekeeping, "PRUNE_BATCH", 10)
    keeper = Housekeeper(settings.model_copy(update={"audit_retention_days": 400}), sessionmaker, bus)
    assert await keeper.prune_audit() == 25  # three batches: 10, 10, 5
    (left,) = await db_fetch(
        settings, "SELECT count(*) AS n, min(created_at) > now() - interval '11 days' AS new FROM audit_events"
    )
    assert (left["n"], left["new"]) == (3, True)
    forever = Housekeeper(settings.model_copy(update={"audit_retention_days": 0}), sessionmaker, bus)
    await db_fetch(settings, INSERT, 5000, 2)
    await forever.tick()  # 0: the tick never prunes
    (kept,) = await db_fetch(settings, "SELECT count(*) AS n FROM audit_events")
    assert kept["n"] == 5


async def test_old_fire_times_deliveries_and_event_ids_are_pruned_but_a_buffered_fire_waits(engine_parts: Any) -> None:
    settings, sessionmaker, bus = engine_parts
    await db_fetch(
        settings,
        """INSERT INTO schedules (id, name, workflow, interval_s, timezone, input, overlap, catchup_window_s, jitter_s,
             paused, priority, next_fire_at, next_due_at, caller)
           VALUES (gen_random_uuid(), 's', 'w', 60, 'UTC', '{}', 'buffer_one', 3600, 0, false, 0, now(), now(), 'k')""",
    )
    await db_fetch(
        settings,
        """INSERT INTO schedule_fires (schedule_id, fire_time, kind, outcome)
           SELECT id, now() - make_interval(days => d), 'scheduled', o FROM schedules,
             (VALUES (200, 'started'), (150, 'missed'), (120, 'buffered'), (3, 'started')) AS f(d, o)""",
    )
    await db_fetch(
        settings,
        "INSERT INTO triggers (id, name, event, workflow, input, priority, caller) "
        "VALUES (gen_random_uuid(), 't', 'push', 'w', '{}', 0, 'k')",
    )
    await db_fetch(
        settings,
        """INSERT INTO trigger_deliveries (trigger_id, delivery_id, source, event, outcome, received_at)
           SELECT id, d::text, 'event', 'push', 'started', now() - make_interval(days => d) FROM triggers,
             (VALUES (100), (2)) AS x(d)""",
    )
    await db_fetch(
        settings,
        """INSERT INTO events (id, event, digest, missions, caller, received_at)
           VALUES ('old', 'push', 'x', '[]', 'k', now() - interval '100 days'),
                  ('new', 'push', 'x', '[]', 'k', now())""",
    )
    keeper = Housekeeper(settings.model_copy(update={"trigger_history_days": 90}), sessionmaker, bus)
    assert await keeper.prune_trigger_history() == 4
    fires = await db_fetch(settings, "SELECT outcome FROM schedule_fires ORDER BY fire_time")
    assert [f["outcome"] for f in fires] == ["buffered", "started"]
    assert [d["delivery_id"] for d in await db_fetch(settings, "SELECT delivery_id FROM trigger_deliveries")] == ["2"]
    assert [e["id"] for e in await db_fetch(settings, "SELECT id FROM events")] == ["new"]
