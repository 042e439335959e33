"""Input Postgres cannot store is refused with 422 naming where it was."""

from __future__ import annotations

import pytest

from services.orchestrator.errors import InvalidInput, as_api_error
from services.orchestrator.storable import require_storable


def test_plain_json_passes() -> None:
    require_storable({"a": ["b", {"c": "d é ✓"}], "n": 1, "x": None}, "body")


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ({"a": ["ok", "bad\x00"]}, "body.a[1]", "NUL"),
        ({"k\x00": 1}, "body", "key contains a NUL"),
        ({"a": {"b": "\udbe6"}}, "body.a.b", "unpaired UTF-16 surrogate"),
    ],
)
def test_unstorable_strings_are_named(value: object, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        require_storable(value, "body")
    assert (
        as_api_error(caught.value).status_code == 422 and caught.value.field == field and words in caught.value.message
    )
