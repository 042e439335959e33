"""Scopes include the ones below them; stored scope lists read as one scope; audit targets come
from a route's path parameters."""

from __future__ import annotations

import pytest

from services.orchestrator.audit import target_of
from services.orchestrator.auth import Caller, Scope, scope_of


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        (Scope.VIEWER, {Scope.VIEWER}),
        (Scope.OPERATOR, {Scope.VIEWER, Scope.OPERATOR}),
        (Scope.ADMIN, {Scope.VIEWER, Scope.OPERATOR, Scope.ADMIN}),
    ],
)
def test_a_scope_allows_itself_and_those_below(scope: Scope, allowed: set[Scope]) -> None:
    assert {needed for needed in Scope if Caller("k", scope).can(needed)} == allowed


@pytest.mark.parametrize(
    ("stored", "scope"),
    [
        (["viewer"], Scope.VIEWER),
        (["operator"], Scope.OPERATOR),
        (["admin"], Scope.ADMIN),
        (["viewer", "admin"], Scope.ADMIN),
        (["*"], Scope.ADMIN),  # keys made before scopes could do everything
        ([], Scope.VIEWER),
        (["root", 3], Scope.VIEWER),  # nothing known: the least
    ],
)
def test_stored_scopes_read_as_one(stored: list[object], scope: Scope) -> None:
    assert scope_of(stored) is scope


def test_audit_targets_name_what_a_route_acted_on() -> None:
    mission = "7b0c5c0e-4f7e-4b8e-9d0c-2a1f3b4c5d6e"
    assert target_of("/v1/missions/{mission_id}/pause", {"mission_id": mission}) == f"mission:{mission}"
    assert (
        target_of("/v1/missions/{mission_id}/steps/{key}/approve", {"mission_id": mission, "key": "apply"})
        == f"mission:{mission}/step:apply"
    )
    assert target_of("/v1/agents/{name}", {"name": "echo"}) == "agent:echo"
    assert target_of("/console/workflows/{name}/missions", {"name": "hello"}) == "workflow:hello"
    assert target_of("/v1/schedules/{name}/pause", {"name": "nightly"}) == "schedule:nightly"
    assert target_of("/console/schedules/{name}/fire", {"name": "nightly"}) == "schedule:nightly"
    assert target_of("/v1/triggers/{name}", {"name": "on-push"}) == "trigger:on-push"
    assert target_of("/v1/keys/{key_id}", {"key_id": "k1"}) == "key:k1"
    assert target_of("/v1/dlq/{dead_letter_id}/replay", {"dead_letter_id": "d1"}) == "dead_letter:d1"
    assert target_of("/v1/missions", {}) is None
