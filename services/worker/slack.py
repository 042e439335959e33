"""The worker's Slack poster (incoming webhook), used by the ``post_slack`` tool."""

from __future__ import annotations

import httpx

from services.common.scrub import scrub_text

_TIMEOUT_S = 10.0


class SlackError(Exception):
    """Slack did not take the message; the text says why (never the webhook URL)."""


class SlackPoster:
    def __init__(self, webhook_url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.webhook_url = webhook_url
        self._client = client or httpx.AsyncClient(timeout=_TIMEOUT_S)

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, text: str) -> str:
        """Post ``text`` (secrets redacted) as a message with one Block Kit section."""
        clean = scrub_text(text)
        payload = {"text": clean, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": clean}}]}
        try:
            response = await self._client.post(self.webhook_url, json=payload)
        except httpx.HTTPError as exc:
            raise SlackError(f"cannot reach Slack: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise SlackError(f"Slack answered {response.status_code}: {scrub_text(response.text[:200])}")
        return response.text.strip() or "ok"
