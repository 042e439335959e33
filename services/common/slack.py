"""Posting to a Slack incoming webhook, safely: the one Slack client of COO (the orchestrator's
alerts and approval requests, the worker's ``post_slack`` tool).

``SlackClient.post(text, blocks)`` sends one message and answers a ``SlackDelivery``; it never
raises (except on cancellation), so a caller may use it inside its own transaction and decide
from ``delivery.ok`` what to persist. Text and blocks are scrubbed of secrets before they leave.
A 429 is retried after its ``Retry-After`` (bounded), a 5xx or a network error after a short
back-off, up to ``max_attempts``; a 4xx other than 429 is not retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from services.common.logging import get_logger
from services.common.scrub import scrub, scrub_text

log = get_logger(__name__)

# Slack's own limits: 50 blocks per message, 3000 characters in a section's text.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000

COLOURS = {"critical": "#E01E5A", "warning": "#ECB22E", "info": "#36C5F0", "resolved": "#2EB67D"}


@dataclass(frozen=True)
class SlackDelivery:
    """The outcome of one ``post``: delivered or not, after how many attempts, and why not."""

    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    reply: str | None = None  # what Slack answered a delivered message (its webhooks say ``ok``)

    @property
    def outcome(self) -> str:
        """``delivered``, ``failed`` or ``disabled`` (no webhook configured) — the metric label."""
        if self.ok:
            return "delivered"
        return "disabled" if self.attempts == 0 else "failed"


class SlackClient:
    """One Slack incoming webhook. ``async with SlackClient(url) as slack: await slack.post(...)``.

    ``webhook_url`` None makes a disabled notifier whose ``post`` answers ``outcome == "disabled"``.
    """

    def __init__(
        self,
        webhook_url: SecretStr | str | None,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        max_retry_after_s: float = 30.0,
        backoff_s: float = 0.5,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        url = (url or "").strip() or None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("Slack webhook URL must be an http(s) URL (COO_SLACK_WEBHOOK_URL)")
        self._url = url
        self.max_attempts = max_attempts
        self.max_retry_after_s = max_retry_after_s
        self.backoff_s = backoff_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

    @property
    def enabled(self) -> bool:
        return self._url is not None

    async def __aenter__(self) -> SlackClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(
        self, text: str, blocks: Sequence[dict[str, Any]] | None = None, *, colour: str | None = None
    ) -> SlackDelivery:
        """Send one message. ``text`` is the notification fallback; ``blocks`` Block Kit blocks
        (at most 50); ``colour`` (``#RRGGBB`` or a key of ``COLOURS``) puts the blocks in a
        coloured attachment bar."""
        if self._url is None:
            return SlackDelivery(ok=False, attempts=0, error="Slack is not configured (COO_SLACK_WEBHOOK_URL unset)")
        payload = self.payload(text, blocks, colour=colour)
        deadline = time.monotonic() + self.max_retry_after_s
        attempt = 0
        last = SlackDelivery(ok=False, attempts=0, error="not sent")
        while attempt < self.max_attempts:
            attempt += 1
            last, wait_s = await self._attempt(payload, attempt)
            if last.ok or wait_s is None or attempt >= self.max_attempts:
                break
            if time.monotonic() + wait_s > deadline:
                last = SlackDelivery(
                    ok=False,
                    attempts=attempt,
                    status_code=last.status_code,
                    error=f"{last.error}; retry in {wait_s:g}s is past the {self.max_retry_after_s:g}s limit",
                )
                break
            await asyncio.sleep(wait_s)
        if not last.ok:
            log.warning("slack_post_failed", attempts=last.attempts, status=last.status_code, error=last.error)
        return last

    @staticmethod
    def payload(text: str, blocks: Sequence[dict[str, Any]] | None, *, colour: str | None = None) -> dict[str, Any]:
        """The JSON body Slack receives, scrubbed of secrets."""
        body: dict[str, Any] = {"text": scrub_text(text)}
        clean = scrub(list(blocks or ()))[:MAX_BLOCKS]
        if clean and colour is not None:
            body["attachments"] = [{"color": COLOURS.get(colour, colour), "blocks": clean}]
        elif clean:
            body["blocks"] = clean
        return body

    async def _attempt(self, payload: dict[str, Any], attempt: int) -> tuple[SlackDelivery, float | None]:
        """One POST: the delivery, and how long to wait before the next try (None: do not retry)."""
        assert self._url is not None
        backoff = self.backoff_s * 2 ** (attempt - 1)
        try:
            response = await self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            error = scrub_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return SlackDelivery(ok=False, attempts=attempt, error=error), backoff
        code = response.status_code
        if 200 <= code < 300:
            reply = scrub_text(response.text[:200].strip()) or None
            return SlackDelivery(ok=True, attempts=attempt, status_code=code, reply=reply), None
        error = scrub_text(f"Slack answered {code}: {response.text[:200]}")
        failed = SlackDelivery(ok=False, attempts=attempt, status_code=code, error=error)
        if code == 429:
            return failed, _retry_after(response.headers.get("retry-after"), default=backoff)
        if code >= 500:
            return failed, backoff
        return failed, None


def mrkdwn_section(text: str) -> dict[str, Any]:
    """One Block Kit section block holding ``text`` (Slack mrkdwn)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _retry_after(value: str | None, *, default: float) -> float:
    """Seconds from a ``Retry-After`` header (Slack sends whole seconds)."""
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return max(0.0, seconds)
