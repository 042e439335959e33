"""The console's DAG layout: layers are longest paths from the roots, rows follow what feeds them,
every edge runs forward, nothing overlaps, and cycles are refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orchestrator.console.graph import (
    LABEL_CHARS,
    CycleError,
    GraphStep,
    Layout,
    layers,
    layout,
    order_rows,
)

REPO_HEALTH = [
    GraphStep("scan", (), "security-scanner", "succeeded"),
    GraphStep("review", ("scan",), "code-reviewer", "running"),
    GraphStep("compliance", ("scan",), "compliance-checker", "succeeded"),
    GraphStep("patch", ("review", "compliance"), "patcher", "pending"),
    GraphStep("notify", ("patch",), "notifier", "pending"),
]


def test_a_layer_is_the_longest_path_from_a_root() -> None:
    deps = {"a": (), "b": ("a",), "c": ("b",), "d": ("a", "c"), "e": ()}
    assert layers(deps) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}


def test_unknown_dependencies_are_ignored_and_cycles_refused() -> None:
    assert layers({"a": ("ghost",), "b": ("a",)}) == {"a": 0, "b": 1}
    with pytest.raises(CycleError, match="cycle"):
        layers({"a": ("c",), "b": ("a",), "c": ("b",)})
    with pytest.raises(CycleError, match="itself"):
        layers({"a": ("a",)})


def test_repo_health_is_four_columns_with_the_parallel_pair_in_the_middle() -> None:
    placed = {n.key: n for n in layout(REPO_HEALTH).nodes}
    assert [placed[k].layer for k in ("scan", "review", "compliance", "patch", "notify")] == [0, 1, 1, 2, 3]
    assert placed["review"].x == placed["compliance"].x > placed["scan"].x
    assert placed["review"].y < placed["compliance"].y  # definition order within the column
    # single steps are centred on the column of two
    middle = (placed["review"].y + placed["compliance"].y) // 2
    assert placed["scan"].y == placed["patch"].y == placed["notify"].y == middle
    assert placed["review"].status == "running" and placed["scan"].agent == "security-scanner"


def test_edges_join_a_dependency_to_its_step_and_keep_its_state() -> None:
    drawn = layout(REPO_HEALTH)
    assert {(e.source, e.target) for e in drawn.edges} == {
        ("scan", "review"),
        ("scan", "compliance"),
        ("review", "patch"),
        ("compliance", "patch"),
        ("patch", "notify"),
    }
    first = next(e for e in drawn.edges if e.target == "review")
    scan = next(n for n in drawn.nodes if n.key == "scan")
    assert first.path.startswith(f"M{scan.x + scan.width},{scan.y + scan.height // 2} C")
    assert first.status == "succeeded"


def test_rows_follow_the_steps_that_feed_them() -> None:
    steps = [
        GraphStep("top"),
        GraphStep("bottom"),
        GraphStep("after-bottom", ("bottom",)),
        GraphStep("after-top", ("top",)),
    ]
    rows = order_rows(steps, layers({s.key: s.depends_on for s in steps}))
    assert rows == {"top": 0, "bottom": 1, "after-top": 0, "after-bottom": 1}


def test_the_tall_drawing_puts_layers_in_rows() -> None:
    placed = {n.key: n for n in layout(REPO_HEALTH, vertical=True).nodes}
    assert placed["scan"].y < placed["review"].y == placed["compliance"].y < placed["patch"].y < placed["notify"].y
    assert placed["review"].x < placed["compliance"].x
    drawn = layout(REPO_HEALTH, vertical=True)
    assert drawn.height > drawn.width  # fits a phone


def test_long_names_are_shortened_and_an_empty_workflow_is_empty() -> None:
    long = "a-step-with-a-very-long-name-indeed"
    node = layout([GraphStep(long)]).nodes[0]
    assert node.key == long and len(node.label) == LABEL_CHARS and node.label.endswith("…")
    empty = layout([])
    assert empty.nodes == () and empty.edges == () and empty.width > 0


def _inside(drawn: Layout) -> bool:
    return all(
        0 <= n.x and n.x + n.width <= drawn.width and 0 <= n.y and n.y + n.height <= drawn.height for n in drawn.nodes
    )


@st.composite
def dags(draw: st.DrawFn) -> list[GraphStep]:
    """Random DAGs: each step may depend on any earlier one."""
    size = draw(st.integers(min_value=1, max_value=12))
    steps = []
    for i in range(size):
        parents = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        steps.append(GraphStep(f"s{i}", tuple(f"s{p}" for p in sorted(parents))))
    return steps


@given(dags(), st.booleans())
def test_any_dag_is_drawn_forward_without_overlaps(steps: list[GraphStep], vertical: bool) -> None:
    drawn = layout(steps, vertical=vertical)
    placed = {n.key: n for n in drawn.nodes}
    assert len(placed) == len(steps) and _inside(drawn)
    for step in steps:
        for parent in step.depends_on:
            assert placed[parent].layer < placed[step.key].layer
    for a, b in itertools.combinations(drawn.nodes, 2):
        apart_x = a.x + a.width <= b.x or b.x + b.width <= a.x
        apart_y = a.y + a.height <= b.y or b.y + b.height <= a.y
        assert apart_x or apart_y, f"{a.key} and {b.key} overlap"
