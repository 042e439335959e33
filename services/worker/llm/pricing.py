"""What a model call costs: a price table per model (USD per million tokens), cache writes and
reads included, with overrides from ``COO_MODEL_PRICES``. A model priced nowhere has an unknown
cost (``None``), never 0."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.worker.llm.base import Usage

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per million tokens. ``cache_write`` is the 5-minute cache write, ``cache_write_1h`` the
    1-hour one; both default to the provider's multipliers of the input price (1.25x and 2x)."""

    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal
    cache_write_1h: Decimal

    @classmethod
    def of(
        cls,
        input: str | float,
        output: str | float,
        cache_write: str | float | None = None,
        cache_read: str | float | None = None,
        cache_write_1h: str | float | None = None,
    ) -> Price:
        base = Decimal(str(input))
        return cls(
            input=base,
            output=Decimal(str(output)),
            cache_write=Decimal(str(cache_write)) if cache_write is not None else base * Decimal("1.25"),
            cache_read=Decimal(str(cache_read)) if cache_read is not None else base * Decimal("0.1"),
            cache_write_1h=Decimal(str(cache_write_1h)) if cache_write_1h is not None else base * 2,
        )


@dataclass(frozen=True)
class TieredPrice:
    """A model whose price depends on the prompt's length (input + cache reads + cache writes) per request."""

    base: Price
    long_prompt: Price
    threshold_tokens: int


# The published Claude prices (https://platform.claude.com/docs/en/about-claude/pricing),
# for the models the installed anthropic SDK names. Dated aliases share their model's price.
_OPUS_45 = Price.of(5, 25, "6.25", "0.50", 10)
_SONNET_4 = Price.of(3, 15, "3.75", "0.30", 6)
_SONNET_5 = Price.of(2, 10, "2.50", "0.20", 4)
_FABLE_5 = Price.of(10, 50, "12.50", 1, 20)
_FABLE_51 = Price.of(10, 50, "12.50", "0.25", 20)

BUILTIN_PRICES: dict[str, Price | TieredPrice] = {
    # opus
    "claude-opus-5-5": Price.of(4, 20, 5, "0.20", 8),
    "claude-opus-5": _OPUS_45,
    "claude-opus-4-8": _OPUS_45,
    "claude-opus-4-7": _OPUS_45,
    "claude-opus-4-6": _OPUS_45,
    "claude-opus-4-5": _OPUS_45,
    "claude-opus-4-5-20251101": _OPUS_45,
    # sonnet (Sonnet 5.5 cache reads cut from $0.20 to $0.10 on 2026-10-07)
    "claude-sonnet-5-5": Price.of(2, 10, "2.50", "0.10", 4),
    "claude-sonnet-5": _SONNET_5,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-5-20250929": _SONNET_4,
    # haiku (Haiku 5.5: prompts over 100k tokens pay the higher rates on every token of the request)
    "claude-haiku-5-5": TieredPrice(
        base=Price.of("0.10", "0.50", "0.125", "0.01", "0.20"),
        long_prompt=Price.of("0.50", "2.50", "0.625", "0.05", 1),
        threshold_tokens=100_000,
    ),
    "claude-haiku-4-5": Price.of(1, 5, "1.25", "0.10", 2),
    "claude-haiku-4-5-20251001": Price.of(1, 5, "1.25", "0.10", 2),
    # fable and mythos (Mythos shares Fable's prices)
    "claude-fable-5-1": _FABLE_51,
    "claude-mythos-5-1": _FABLE_51,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
}


def _prompt_tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens


class PriceTable:
    """The built-in prices, with ``overrides`` (from ``COO_MODEL_PRICES``) taking precedence."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.prices: dict[str, Price | TieredPrice] = dict(BUILTIN_PRICES)
        for model, values in (overrides or {}).items():
            self.prices[model] = Price.of(
                values["input"],
                values["output"],
                values.get("cache_write"),
                values.get("cache_read"),
                values.get("cache_write_1h"),
            )

    def price(self, model: str, usage: Usage) -> Price | None:
        entry = self.prices.get(model)
        if isinstance(entry, TieredPrice):
            return entry.long_prompt if _prompt_tokens(usage) > entry.threshold_tokens else entry.base
        return entry

    def knows(self, model: str) -> bool:
        return model in self.prices

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """USD of one model call, or ``None`` when the model has no price."""
        price = self.price(model, usage)
        if price is None:
            return None
        write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        write_5m = usage.cache_write_tokens - write_1h
        total = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + write_5m * price.cache_write
            + write_1h * price.cache_write_1h
            + usage.cache_read_tokens * price.cache_read
        )
        return (total / MILLION).quantize(Decimal("0.00000001"))
