"""Step input templates: a sandboxed Jinja2 environment that keeps native types.

``{{ steps.scan.output.summary.total }}`` alone in a string renders to the number itself; inside a
longer string it is interpolated. A missing key fails with the dotted path that was reached, never
with an empty string.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from services.common.errors import CooError, ErrorType


class _Sandbox(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Step outputs are JSON: a key named like a dict method (``items``, ``keys``) is data first.
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            value = super().getattr(obj, attribute)
            if callable(value) and not isinstance(value, Undefined):
                where = getattr(obj, "_coo_path", None)
                return _Method(value, f"{where}.{attribute}" if where else attribute)
            return value
        return super().getattr(obj, attribute)


class _Method:
    """A dict method reached with dot syntax: callable (``input.items()``), never a value."""

    __slots__ = ("_fn", "path")

    def __init__(self, fn: Any, path: str) -> None:
        self._fn = fn
        self.path = path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


class _PathUndefined(StrictUndefined):
    """StrictUndefined that names the full path that was missing."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002
        hint = self._undefined_hint
        if hint is None:
            name = self._undefined_name
            obj = self._undefined_obj
            where = getattr(obj, "_coo_path", None)
            if where is None:
                path = str(name)
            elif isinstance(name, int):
                path = f"{where}[{name}]"
            else:
                path = f"{where}.{name}"
            hint = f"'{path}' is undefined"
        raise UndefinedError(hint)

    __str__ = _fail_with_undefined_error
    __iter__ = _fail_with_undefined_error
    __len__ = _fail_with_undefined_error
    __eq__ = _fail_with_undefined_error
    __ne__ = _fail_with_undefined_error
    __bool__ = _fail_with_undefined_error
    __hash__ = _fail_with_undefined_error
    __int__ = _fail_with_undefined_error
    __float__ = _fail_with_undefined_error
    __getattr__ = _fail_with_undefined_error
    __getitem__ = _fail_with_undefined_error


class _PathDict(dict[str, Any]):
    """A dict that remembers where it sits in the context, for error messages."""

    _coo_path: str

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        super().__init__({k: _wrap(v, f"{path}.{k}") for k, v in data.items()})
        self._coo_path = path


class _PathList(list[Any]):
    """A list that remembers where it sits in the context, for error messages."""

    _coo_path: str

    def __init__(self, data: list[Any], path: str) -> None:
        super().__init__(_wrap(v, f"{path}[{i}]") for i, v in enumerate(data))
        self._coo_path = path


def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return _PathDict(value, path)
    if isinstance(value, list):
        return _PathList(value, path)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _only_values(value: Any) -> Any:
    """Every ``{{ … }}`` must produce data: a method (``output.items`` with no such key) is an error."""
    if isinstance(value, _Method):
        raise UndefinedError(f"'{value.path}' is undefined")
    if callable(value) and not isinstance(value, Undefined):
        raise UndefinedError(f"'{getattr(value, '__name__', 'value')}' is a function, not data")
    return value


_env = _Sandbox(undefined=_PathUndefined, autoescape=False, keep_trailing_newline=True, finalize=_only_values)


def _lone_expression(text: str) -> str | None:
    """The expression of a template that is exactly one ``{{ … }}`` (its value keeps its type)."""
    tree = _env.parse(text)
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = tree.body[0].nodes
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    inner = text.strip()[2:-2]
    return inner.strip().removeprefix("-").removesuffix("-").strip()


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[Template | None, Callable[..., Any] | None]:
    """A template's compiled form, once per distinct text: (template, None) for interpolation,
    (None, expression) for a lone ``{{ … }}`` whose value keeps its type."""
    expression = _lone_expression(text)
    if expression is None:
        return _env.from_string(text), None
    return None, _env.compile_expression(expression, undefined_to_none=False)


def _evaluate(text: str, context: Mapping[str, Any]) -> Any:
    template, expression = _compiled(text)
    if template is not None:  # interpolation: always a string
        return template.render(context)
    assert expression is not None
    value = expression(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return _only_values(value)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def check_syntax(text: str) -> None:
    """Raise ``ValueError`` with Jinja's message when ``text`` is not a valid template."""
    try:
        _env.parse(text)
    except TemplateSyntaxError as exc:
        raise ValueError(f"bad template syntax: {exc.message} (line {exc.lineno})") from exc


def referenced_roots(text: str) -> set[str]:
    """Top-level names a template reads (``input``, ``steps``, or a step id in the short form)."""
    return set(meta.find_undeclared_variables(_env.parse(text)))


def referenced_steps(text: str) -> set[str]:
    """Step ids a template reads, through ``steps.<id>`` / ``steps['<id>']`` or the short form."""
    tree = _env.parse(text)
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "steps":
                found.add(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    roots = referenced_roots(text) - {"input", "steps", "mission"}
    return found | roots


def build_context(
    mission_input: Mapping[str, Any],
    step_outputs: Mapping[str, Mapping[str, Any]],
    mission: Mapping[str, Any],
) -> dict[str, Any]:
    steps = {key: dict(value) for key, value in step_outputs.items()}
    context: dict[str, Any] = {
        "input": _wrap(mission_input, "input"),
        "steps": _wrap(steps, "steps"),
        "mission": _wrap(mission, "mission"),
    }
    for key, value in steps.items():  # short form: {{ scan.output.x }}
        context.setdefault(key, _wrap(value, key))
    return context


def render_value(value: Any, context: Mapping[str, Any], *, field: str) -> Any:
    """Render every template string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            rendered = _unwrap(_evaluate(value, context))
            orjson.dumps(rendered)
        except UndefinedError as exc:
            raise CooError(ErrorType.VALIDATION, f"{field}: {exc.message}") from exc
        except TemplateSyntaxError as exc:
            raise CooError(ErrorType.VALIDATION, f"{field}: bad template syntax: {exc.message}") from exc
        except TypeError as exc:
            raise CooError(
                ErrorType.VALIDATION,
                f"{field}: the template's value is not JSON data ({exc}); a filter such as map or select "
                "needs `| list`",
            ) from exc
        except Exception as exc:
            raise CooError(ErrorType.VALIDATION, f"{field}: template failed: {type(exc).__name__}: {exc}") from exc
        return rendered
    if isinstance(value, Mapping):
        return {k: render_value(v, context, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def evaluate_condition(expression: str, context: Mapping[str, Any], *, field: str) -> bool:
    """Evaluate a ``when`` condition (a bare expression or a ``{{ … }}`` template) to a bool."""
    source = expression if is_template(expression) else "{{ (" + expression + ") }}"
    value = render_value(source, context, field=field)
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none")
    return bool(value)


def event_context(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a trigger's ``input`` templates and ``filter`` see: ``{{ event.payload.… }}``, ``{{ event.id }}``."""
    return {"event": _wrap(dict(event), "event")}
