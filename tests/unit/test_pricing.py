"""The price table against Anthropic's published per-million-token prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.common.settings import Settings
from services.worker.llm.base import Usage
from services.worker.llm.pricing import PriceTable
from services.worker.llm.providers import model_warnings, sdk_deprecated_models

MTOK = 1_000_000

# Published prices, USD per million tokens: input, output, 5-minute cache write, cache read.
PUBLISHED = {
    "claude-opus-5-5": ("4", "20", "5", "0.20"),
    "claude-opus-5": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-8": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-7": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-6": ("5", "25", "6.25", "0.50"),
    "claude-opus-4-5": ("5", "25", "6.25", "0.50"),
    "claude-sonnet-5-5": ("2", "10", "2.50", "0.10"),
    "claude-sonnet-5": ("2", "10", "2.50", "0.20"),
    "claude-sonnet-4-6": ("3", "15", "3.75", "0.30"),
    "claude-sonnet-4-5": ("3", "15", "3.75", "0.30"),
    "claude-haiku-5-5": ("0.10", "0.50", "0.125", "0.01"),
    "claude-haiku-4-5": ("1", "5", "1.25", "0.10"),
    "claude-fable-5-1": ("10", "50", "12.50", "0.25"),
    "claude-fable-5": ("10", "50", "12.50", "1"),
}


@pytest.mark.parametrize(("model", "published"), sorted(PUBLISHED.items()))
def test_each_token_kind_costs_its_published_price(model: str, published: tuple[str, ...]) -> None:
    table = PriceTable()
    input_, output, write, read = (Decimal(p) / 10 for p in published)
    n = MTOK // 10  # a tenth of a million: within every model's base (short-prompt) tier
    assert table.cost(model, Usage(input_tokens=n)) == input_
    assert table.cost(model, Usage(input_tokens=1, output_tokens=n)) == output + Decimal(published[0]) / MTOK
    assert table.cost(model, Usage(cache_write_tokens=n)) == write
    assert table.cost(model, Usage(cache_read_tokens=n)) == read


def test_the_sdk_deprecation_list_is_read_as_model_to_date() -> None:
    # Its content is the SDK's (and moves with each release); its shape is what the start-up reads.
    listed = sdk_deprecated_models()
    assert all(isinstance(model, str) and isinstance(date, str) for model, date in listed.items())
    some = dict(list(listed.items())[:1])
    assert len(model_warnings(some, PriceTable(), some)) >= len(some)


def test_a_mixed_call_adds_every_kind_and_one_hour_writes_cost_double_input() -> None:
    usage = Usage(
        input_tokens=1200,
        output_tokens=350,
        cache_read_tokens=20_000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=1000,
    )
    # sonnet 4.6: 1200*3 + 350*15 + 20000*0.30 + 2000*3.75 + 1000*6  (per million)
    expected = (Decimal(1200 * 3) + 350 * 15 + Decimal("6000") + Decimal("7500") + 6000) / MTOK
    assert PriceTable().cost("claude-sonnet-4-6", usage) == expected.quantize(Decimal("0.00000001"))


def test_haiku_5_5_prompts_over_100k_tokens_pay_the_long_prompt_rates() -> None:
    table = PriceTable()
    assert table.cost("claude-haiku-5-5", Usage(input_tokens=100_000, output_tokens=MTOK)) == Decimal("0.51")
    assert table.cost("claude-haiku-5-5", Usage(input_tokens=100_001)) == Decimal("0.0500005")


def test_an_unknown_model_has_no_cost_not_zero() -> None:
    assert PriceTable().cost("claude-fable-5-2", Usage(input_tokens=10)) is None
    assert PriceTable().cost("my-local-model", Usage()) is None


def test_overrides_price_missing_models_and_take_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "COO_MODEL_PRICES",
        '{"my-model": {"input": 1, "output": 2}, "claude-sonnet-4-6": {"input": 4, "output": 16, "cache_read": 0.5}}',
    )
    table = PriceTable(Settings().model_prices)
    assert table.cost("my-model", Usage(input_tokens=MTOK, output_tokens=MTOK)) == Decimal(3)
    assert table.cost("my-model", Usage(cache_write_tokens=MTOK)) == Decimal("1.25")  # 1.25x input by default
    assert table.cost("claude-sonnet-4-6", Usage(cache_read_tokens=MTOK)) == Decimal("0.5")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "must be a JSON object"),
        ('{"m": {"input": 1}}', "missing ['output']"),
        ('{"m": {"input": 1, "output": 2, "colour": 3}}', "unknown ['colour']"),
        ('{"m": {"input": -1, "output": 2}}', "must be numbers >= 0"),
    ],
)
def test_bad_price_overrides_are_refused_naming_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    monkeypatch.setenv("COO_MODEL_PRICES", raw)
    with pytest.raises(ValueError, match="model_prices") as caught:
        Settings()
    assert message in str(caught.value)


def test_start_up_warns_about_deprecated_and_unpriced_models() -> None:
    # The deprecation data is the test's own: the SDK's list changes with every release.
    deprecated = {"claude-sonnet-4-5": "March 1st, 2030"}
    models = ["claude-sonnet-4-5", "claude-opus-4-7", "offline", "claude-fable-5-2"]
    warnings = model_warnings(models, PriceTable(), deprecated)
    assert any("'claude-sonnet-4-5' is deprecated and reaches end-of-life on March 1st, 2030" in w for w in warnings), (
        warnings
    )
    assert any("'claude-fable-5-2' has no price" in w and "COO_MODEL_PRICES" in w for w in warnings)
    assert not any("claude-opus-4-7" in w or "offline" in w for w in warnings)
