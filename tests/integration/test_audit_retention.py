"""Audit events past COO_AUDIT_RETENTION_DAYS are deleted by the engine's housekeeping, in batches;
newer ones stay, and 0 keeps everything."""

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
    monkeypatch.setattr(housekeeping, "AUDIT_PRUNE_BATCH", 10)
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
