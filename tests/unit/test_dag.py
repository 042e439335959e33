"""Workflow definitions: valid shapes, and each invalid one rejected with a JSON pointer."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.orchestrator.engine.dag import DefinitionError, ancestors, leaves, parse_definition


def step(key: str, *deps: str, agent: str = "coder", **extra: Any) -> dict[str, Any]:
    return {"id": key, "agent": agent, "depends_on": list(deps), **extra}


def workflow(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": list(steps), **extra}


def rejected(raw: dict[str, Any], **kwargs: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_definition(raw, **kwargs)
    return info.value


# --- valid definitions --------------------------------------------------------------------


def test_chain_is_accepted() -> None:
    definition = parse_definition(workflow(step("a"), step("b", "a"), step("c", "b")))
    assert [s.id for s in definition.steps] == ["a", "b", "c"]
    assert definition.step("c").depends_on == ["b"]
    assert leaves(definition) == ["c"]
    assert ancestors(definition) == {"a": set(), "b": {"a"}, "c": {"a", "b"}}


def test_diamond_is_accepted() -> None:
    definition = parse_definition(
        workflow(
            step("scan"),
            step("left", "scan", input={"n": "{{ steps.scan.output.total }}"}),
            step("right", "scan", input={"n": "{{ scan.output.total }}"}),
            step("merge", "left", "right", input={"l": "{{ left.output }}", "r": "{{ steps['right'].output }}"}),
        )
    )
    assert leaves(definition) == ["merge"]
    assert ancestors(definition)["merge"] == {"scan", "left", "right"}
    assert ancestors(definition)["left"] == {"scan"}


def test_fan_out_of_a_hundred_steps_is_accepted() -> None:
    fan = [step(f"s{i}", "root", input={"item": f"{{{{ steps.root.output.items[{i}] }}}}"}) for i in range(100)]
    definition = parse_definition(workflow(step("root"), *fan, step("join", *[f"s{i}" for i in range(100)])))
    assert len(definition.steps) == 102
    assert leaves(definition) == ["join"]
    assert len(ancestors(definition)["join"]) == 101


def test_fan_out_without_a_join_has_every_branch_as_a_leaf() -> None:
    definition = parse_definition(workflow(step("root"), *[step(f"s{i}", "root") for i in range(100)]))
    assert leaves(definition) == [f"s{i}" for i in range(100)]


def test_independent_steps_are_all_leaves() -> None:
    definition = parse_definition(workflow(step("a"), step("b")))
    assert leaves(definition) == ["a", "b"]
    assert ancestors(definition) == {"a": set(), "b": set()}


def test_defaults_and_aliases_are_applied() -> None:
    definition = parse_definition(
        workflow(step("a", retry={"max_attempts": 5, "base": 0.5, "max": 10, "jitter": False}, timeout_s=30))
    )
    a = definition.step("a")
    assert (a.retry.max_attempts, a.retry.base_s, a.retry.max_s, a.retry.jitter) == (5, 0.5, 10, False)
    assert a.timeout_s == 30
    b = parse_definition(workflow(step("b"))).step("b")
    assert (b.retry.max_attempts, b.retry.jitter, b.timeout_s) == (3, True, 600)


def test_transitive_ancestor_may_be_read_by_a_template() -> None:
    definition = parse_definition(
        workflow(
            step("a"),
            step("b", "a"),
            step("c", "b", input={"q": "{{ steps.a.output }}", "r": "{{ a.output.x }}"}, when="a.output.ok"),
        )
    )
    assert definition.step("c").when == "a.output.ok"


def test_known_agents_accepts_listed_agents() -> None:
    definition = parse_definition(
        workflow(step("a", agent="coder"), step("b", agent="reviewer")), known_agents={"coder", "reviewer"}
    )
    assert [s.agent for s in definition.steps] == ["coder", "reviewer"]


def test_templates_reading_only_input_and_mission_need_no_dependencies() -> None:
    parse_definition(workflow(step("a", input={"repo": "{{ input.repo }}", "m": "{{ mission.id }}"})))


# --- invalid definitions: pointers --------------------------------------------------------


def test_cycle_points_at_depends_on_of_a_step_in_the_cycle() -> None:
    error = rejected(workflow(step("root"), step("b", "c"), step("c", "d"), step("d", "b")))
    match = re.fullmatch(r"/steps/(\d+)/depends_on", error.pointer)
    assert match is not None, error.pointer
    assert int(match.group(1)) in {1, 2, 3}
    assert "cycle" in error.message


def test_two_step_cycle_is_rejected() -> None:
    error = rejected(workflow(step("a", "b"), step("b", "a")))
    assert error.pointer in {"/steps/0/depends_on", "/steps/1/depends_on"}


def test_self_dependency_points_at_the_entry() -> None:
    error = rejected(workflow(step("a"), step("b", "a", "b")))
    assert error.pointer == "/steps/1/depends_on/1"
    assert "itself" in error.message


def test_unknown_dependency_points_at_the_entry() -> None:
    error = rejected(workflow(step("a"), step("b", "a", "ghost")))
    assert error.pointer == "/steps/1/depends_on/1"
    assert "'ghost'" in error.message


def test_duplicate_id_points_at_the_second_occurrence() -> None:
    error = rejected(workflow(step("a"), step("b"), step("a")))
    assert error.pointer == "/steps/2/id"
    assert "'a'" in error.message


def test_unknown_agent_points_at_the_agent_field() -> None:
    error = rejected(workflow(step("a", agent="coder"), step("b", agent="nobody")), known_agents={"coder"})
    assert error.pointer == "/steps/1/agent"
    assert "'nobody'" in error.message


def test_bad_template_syntax_points_at_the_input_field() -> None:
    error = rejected(workflow(step("a", input={"ok": "x", "q": "{{ input.repo "})))
    assert error.pointer == "/steps/0/input/q"
    assert "syntax" in error.message


def test_bad_template_syntax_in_a_nested_list_points_at_the_item() -> None:
    error = rejected(workflow(step("a", input={"q": ["fine", {"r": "{% if %}"}]})))
    assert error.pointer == "/steps/0/input/q/1/r"


def test_bad_syntax_in_when_points_at_when() -> None:
    error = rejected(workflow(step("a"), step("b", "a", when="{{ a.output.ok ")))
    assert error.pointer == "/steps/1/when"


def test_template_referencing_an_unknown_step_is_rejected() -> None:
    error = rejected(workflow(step("a"), step("b", "a", input={"q": "{{ steps.ghost.output }}"})))
    assert error.pointer == "/steps/1/input/q"
    assert "'ghost'" in error.message


def test_short_form_referencing_an_unknown_step_is_rejected() -> None:
    error = rejected(workflow(step("a", input={"q": "{{ ghost.output }}"})))
    assert error.pointer == "/steps/0/input/q"
    assert "'ghost'" in error.message


def test_template_referencing_a_step_that_is_not_an_ancestor_is_rejected() -> None:
    error = rejected(workflow(step("a"), step("b"), step("c", "a", input={"q": "{{ steps['b'].output }}"})))
    assert error.pointer == "/steps/2/input/q"
    assert "'b'" in error.message
    assert "depends_on" in error.message


def test_template_referencing_a_descendant_is_rejected() -> None:
    error = rejected(workflow(step("a", input={"q": "{{ b.output }}"}), step("b", "a")))
    assert error.pointer == "/steps/0/input/q"


def test_when_referencing_a_step_that_is_not_an_ancestor_is_rejected() -> None:
    error = rejected(workflow(step("a"), step("b", when="steps.a.output.ok")))
    assert error.pointer == "/steps/1/when"


def test_template_referencing_its_own_step_is_rejected() -> None:
    error = rejected(workflow(step("a", input={"q": "{{ steps.a.output }}"})))
    assert error.pointer == "/steps/0/input/q"


def test_unknown_field_on_a_step_is_rejected() -> None:
    error = rejected(workflow(step("a"), step("b", retries=3)))
    assert error.pointer == "/steps/1/retries"


def test_unknown_top_level_field_is_rejected() -> None:
    error = rejected(workflow(step("a"), owner="me"))
    assert error.pointer == "/owner"


def test_unknown_field_in_retry_is_rejected() -> None:
    error = rejected(workflow(step("a", retry={"max_attempts": 2, "delay": 1})))
    assert error.pointer == "/steps/0/retry/delay"


@pytest.mark.parametrize("timeout", [-1, 0])
def test_non_positive_timeout_is_rejected(timeout: float) -> None:
    error = rejected(workflow(step("a"), step("b", timeout_s=timeout)))
    assert error.pointer == "/steps/1/timeout_s"


def test_zero_max_attempts_is_rejected() -> None:
    error = rejected(workflow(step("a", retry={"max_attempts": 0})))
    assert error.pointer == "/steps/0/retry/max_attempts"


def test_empty_steps_is_rejected() -> None:
    assert rejected(workflow()).pointer == "/steps"


def test_missing_name_is_rejected() -> None:
    assert rejected({"steps": [step("a")]}).pointer == "/name"


@pytest.mark.parametrize("bad_id", ["1abc", "has space", "a/b", ""])
def test_invalid_step_id_is_rejected(bad_id: str) -> None:
    assert rejected(workflow(step("a"), step(bad_id))).pointer == "/steps/1/id"


def test_definition_error_is_a_value_error_with_its_message() -> None:
    error = rejected(workflow(step("a", "ghost")))
    assert isinstance(error, ValueError)
    assert str(error) == error.message
