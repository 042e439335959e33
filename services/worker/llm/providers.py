"""Which model provider a worker uses, and what it says at start-up about the configured models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.common.logging import get_logger
from services.common.settings import Settings
from services.worker.llm.base import ModelProvider
from services.worker.llm.offline import OFFLINE_MODEL, OfflineProvider
from services.worker.llm.pricing import PriceTable

log = get_logger(__name__)


def select_provider(settings: Settings) -> ModelProvider:
    """``ANTHROPIC_API_KEY`` set → Claude; unset → the offline model. Said once, in the log.
    (The SDK, some 40 MB of memory, is imported only when Claude is used.)"""
    if settings.anthropic_api_key is not None and settings.anthropic_api_key.get_secret_value().strip():
        from services.worker.llm.anthropic import AnthropicProvider

        log.info(
            "model_provider",
            provider="anthropic",
            base_url=settings.anthropic_base_url or "SDK default",
            timeout_s=settings.llm_timeout_s,
        )
        return AnthropicProvider(
            settings.anthropic_api_key.get_secret_value().strip(),
            base_url=settings.anthropic_base_url,
            timeout_s=settings.llm_timeout_s,
        )
    log.info("model_provider", provider="offline", detail="ANTHROPIC_API_KEY unset: agents run on the offline model")
    return OfflineProvider()


def sdk_deprecated_models() -> Mapping[str, str]:
    """The installed ``anthropic`` SDK's own list of deprecated models and their end-of-life dates."""
    from anthropic._data import DEPRECATED_MODELS

    return dict(DEPRECATED_MODELS)


def model_warnings(models: Iterable[str], prices: PriceTable, deprecated: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the models agents are configured with: deprecated (``deprecated`` maps a
    model to its end-of-life date; the SDK's own list by default) or without a price (their cost
    will be stored as unknown)."""
    end_of_life = sdk_deprecated_models() if deprecated is None else deprecated
    warnings: list[str] = []
    for model in sorted(set(models) - {OFFLINE_MODEL}):
        if model in end_of_life:
            warnings.append(
                f"model '{model}' is deprecated and reaches end-of-life on {end_of_life[model]}: "
                "move its agents to a newer model"
            )
        if not prices.knows(model):
            warnings.append(
                f"model '{model}' has no price: its calls will have an unknown cost; set COO_MODEL_PRICES to price it"
            )
    return warnings
