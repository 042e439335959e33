"""Step input templates: native types, interpolation, path-naming errors, sandbox, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import CooError, ErrorType
from services.orchestrator.engine.templates import (
    build_context,
    evaluate_condition,
    referenced_steps,
    render_value,
)


@pytest.fixture
def context() -> dict[str, Any]:
    return build_context(
        mission_input={"repo": "acme/api", "q": ["first", {"x": 1}], "zero": 0},
        step_outputs={
            "scan": {"output": {"summary": {"total": 3, "ok": True}, "files": ["a.py", "b.py"]}},
            "fix": {"output": {"patch": "diff --git"}},
        },
        mission={"id": "m-1", "priority": 5},
    )


def render(value: Any, context: dict[str, Any], field: str = "input.x") -> Any:
    return render_value(value, context, field=field)


def validation_error(value: Any, context: dict[str, Any], field: str = "input.x") -> CooError:
    with pytest.raises(CooError) as info:
        render(value, context, field)
    assert info.value.error_type is ErrorType.VALIDATION
    return info.value


# --- native types and interpolation -------------------------------------------------------


def test_a_lone_expression_keeps_its_native_type(context: dict[str, Any]) -> None:
    total = render("{{ steps.scan.output.summary.total }}", context)
    assert total == 3
    assert type(total) is int
    assert render("{{ steps.scan.output.summary.ok }}", context) is True


def test_a_lone_expression_can_yield_whole_dicts_and_lists(context: dict[str, Any]) -> None:
    output = render("{{ steps.scan.output }}", context)
    assert output == {"summary": {"total": 3, "ok": True}, "files": ["a.py", "b.py"]}
    assert type(output) is dict
    assert type(output["summary"]) is dict
    files = render("{{ steps.scan.output.files }}", context)
    assert files == ["a.py", "b.py"]
    assert type(files) is list


def test_expression_inside_a_longer_string_is_interpolated(context: dict[str, Any]) -> None:
    assert render("found {{ steps.scan.output.summary.total }} issues", context) == "found 3 issues"
    assert render("{{ input.repo }}#{{ mission.priority }}", context) == "acme/api#5"


def test_short_form_reads_a_step_output_without_the_steps_prefix(context: dict[str, Any]) -> None:
    assert render("{{ scan.output.summary.total }}", context) == 3
    assert render("total: {{ scan.output.summary.total }}", context) == "total: 3"


def test_bracket_access_reads_the_same_value(context: dict[str, Any]) -> None:
    assert render("{{ steps['scan'].output['summary']['total'] }}", context) == 3


def test_plain_strings_and_non_strings_are_returned_unchanged(context: dict[str, Any]) -> None:
    assert render("no template here", context) == "no template here"
    assert render(42, context) == 42
    assert render(None, context) is None


def test_mission_input_is_available_under_input(context: dict[str, Any]) -> None:
    assert render("{{ input.repo }}", context) == "acme/api"
    assert render("{{ input.q[1].x }}", context) == 1


# --- missing keys -------------------------------------------------------------------------


def test_missing_key_names_the_full_dotted_path(context: dict[str, Any]) -> None:
    error = validation_error("{{ steps.scan.output.summary.nope }}", context)
    assert "'steps.scan.output.summary.nope'" in error.message
    assert error.message.startswith("input.x:")


def test_missing_key_inside_an_interpolated_string_raises(context: dict[str, Any]) -> None:
    error = validation_error("before {{ steps.scan.output.summary.nope }} after", context)
    assert "'steps.scan.output.summary.nope'" in error.message


def test_missing_key_in_short_form_names_the_short_path(context: dict[str, Any]) -> None:
    error = validation_error("{{ scan.output.missing }}", context)
    assert "'scan.output.missing'" in error.message


def test_unknown_step_names_the_step(context: dict[str, Any]) -> None:
    error = validation_error("{{ steps.deploy.output }}", context)
    assert "'steps.deploy'" in error.message


def test_missing_input_key_names_the_input_path(context: dict[str, Any]) -> None:
    error = validation_error("{{ input.branch }}", context)
    assert "'input.branch'" in error.message


def test_missing_key_below_a_list_item_names_the_index(context: dict[str, Any]) -> None:
    error = validation_error("{{ input.q[1].y }}", context)
    assert "'input.q[1].y'" in error.message


def test_list_index_out_of_range_names_the_full_path(context: dict[str, Any]) -> None:
    error = validation_error("{{ input.q[5] }}", context)
    assert "'input.q[5]'" in error.message


def test_missing_key_never_renders_as_an_empty_string(context: dict[str, Any]) -> None:
    with pytest.raises(CooError):
        render("{{ input.nope }}", context)
    with pytest.raises(CooError):
        render("[{{ input.nope }}]", context)


def test_output_key_named_like_a_dict_method_renders_its_value() -> None:
    context = build_context({}, {"scan": {"output": {"items": [1, 2]}}}, {})
    assert render_value("{{ steps.scan.output.items }}", context, field="input.x") == [1, 2]


def test_missing_key_named_like_a_dict_method_raises(context: dict[str, Any]) -> None:
    error = validation_error("{{ input.items }}", context)
    assert "'input.items'" in error.message


# --- default filter -----------------------------------------------------------------------


def test_default_filter_supplies_a_value_for_a_missing_key(context: dict[str, Any]) -> None:
    assert render("{{ steps.scan.output.summary.nope | default(7) }}", context) == 7
    assert render("{{ input.branch | default('main') }}", context) == "main"
    assert render("branch={{ input.branch | default('main') }}", context) == "branch=main"


def test_default_filter_keeps_an_existing_value(context: dict[str, Any]) -> None:
    assert render("{{ steps.scan.output.summary.total | default(7) }}", context) == 3


# --- nested values ------------------------------------------------------------------------


def test_templates_inside_nested_dicts_and_lists_are_rendered(context: dict[str, Any]) -> None:
    value = {
        "repo": "{{ input.repo }}",
        "meta": {"count": "{{ scan.output.summary.total }}", "static": 1},
        "list": ["{{ steps.fix.output.patch }}", "plain", {"deep": "{{ input.q[0] }}"}],
    }
    assert render(value, context, field="input") == {
        "repo": "acme/api",
        "meta": {"count": 3, "static": 1},
        "list": ["diff --git", "plain", {"deep": "first"}],
    }


def test_error_in_a_list_names_the_field_path_with_its_index(context: dict[str, Any]) -> None:
    error = validation_error(["ok", "{{ input.nope }}"], context, field="input.q")
    assert error.message.startswith("input.q[1]:")
    assert "'input.nope'" in error.message


def test_error_in_a_nested_dict_names_the_field_path(context: dict[str, Any]) -> None:
    error = validation_error({"a": {"b": ["x", "{{ input.nope }}"]}}, context, field="input")
    assert error.message.startswith("input.a.b[1]:")


def test_bad_syntax_at_render_time_is_a_validation_error(context: dict[str, Any]) -> None:
    error = validation_error("{{ input.repo ", context)
    assert "syntax" in error.message


def test_runtime_failure_is_a_validation_error(context: dict[str, Any]) -> None:
    error = validation_error("{{ 1 / input.zero }}", context)
    assert "ZeroDivisionError" in error.message


# --- sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ input.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ input.__class__.__mro__[1].__subclasses__() }}",
        "{{ input.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "x{{ ''.__class__ }}x",
    ],
)
def test_python_internals_are_not_reachable(context: dict[str, Any], template: str) -> None:
    error = validation_error(template, context)
    assert "unsafe" in error.message
    assert "<class" not in error.message
    assert "object>" not in error.message


# --- conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("steps.scan.output.summary.total > 2", True),
        ("steps.scan.output.summary.total > 5", False),
        ("scan.output.summary.ok", True),
        ("not scan.output.summary.ok", False),
        ("input.zero", False),
        ("{{ steps.scan.output.summary.total > 2 }}", True),
        ("{{ steps.scan.output.summary.total > 5 }}", False),
        ("{{ input.repo }}", True),
        ("input.repo == 'acme/api'", True),
    ],
)
def test_condition_bare_and_template_forms(context: dict[str, Any], expression: str, expected: bool) -> None:
    assert evaluate_condition(expression, context, field="when") is expected


@pytest.mark.parametrize("text", ["", "false", "False", " FALSE ", "0", "no", "No", "none", "None"])
def test_falsy_strings_are_false(context: dict[str, Any], text: str) -> None:
    assert evaluate_condition(repr(text), context, field="when") is False


@pytest.mark.parametrize("text", ["true", "yes", "1", "anything", "off?"])
def test_other_strings_are_true(context: dict[str, Any], text: str) -> None:
    assert evaluate_condition(repr(text), context, field="when") is True


def test_condition_on_a_missing_key_raises_instead_of_being_false(context: dict[str, Any]) -> None:
    with pytest.raises(CooError) as info:
        evaluate_condition("steps.scan.output.nope", context, field="steps/1/when")
    assert info.value.error_type is ErrorType.VALIDATION
    assert "'steps.scan.output.nope'" in info.value.message
    assert info.value.message.startswith("steps/1/when:")


# --- referenced steps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ steps.scan.output }}", {"scan"}),
        ("{{ steps['scan'].output }}", {"scan"}),
        ('{{ steps["scan"].output.total }}', {"scan"}),
        ("{{ scan.output.summary.total }}", {"scan"}),
        ("{{ steps.a.output }} and {{ b.output }} and {{ steps['c'].x }}", {"a", "b", "c"}),
        ("{{ input.repo }} {{ mission.id }}", set()),
        ("{% if steps.a.output.ok %}{{ b.output }}{% endif %}", {"a", "b"}),
        ("{% for f in steps.scan.output.files %}{{ f }}{% endfor %}", {"scan"}),
        ("no template", set()),
    ],
)
def test_referenced_steps(text: str, expected: set[str]) -> None:
    assert referenced_steps(text) == expected
