"""The CLI's client of COO's REST API: ``coo.client`` underneath (transport, key, 429s, errors, the
event stream), with answers kept as the API's JSON, which the commands print as they came."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coo import routes
from coo.client import ApiError, Client, CooError
from coo.config import RATE_LIMIT_PATIENCE_S, dev_api_key
from services.common.settings import Settings
from services.common.status import MISSION_TERMINAL

__all__ = ["RATE_LIMIT_PATIENCE_S", "ApiFailure", "CooClient", "resolve_api_key"]

ApiFailure = CooError
"""What a failed call raises (an error answer is ``coo.client.ApiError``, one of these); its text
is ``METHOD /path → status: message``."""


def resolve_api_key(settings: Settings) -> str | None:
    """``COO_API_KEY`` (or its secret file), else the dev key ``coo up`` wrote to the data directory."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    return dev_api_key(settings.data_dir)


class CooClient:
    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 30.0) -> None:
        self.api = Client(base_url, api_key or "", timeout=timeout_s)  # "": no key, not the environment's
        self.http = self.api.http

    @classmethod
    def from_settings(cls, settings: Settings) -> CooClient:
        return cls(settings.api_url, resolve_api_key(settings))

    def close(self) -> None:
        self.api.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route: the answer's JSON (None when empty); an error answer raises ``ApiFailure``."""
        return self.api.request(method, path, **kwargs)

    _call = request

    def register_workflow(self, path: Path) -> Any:
        return self.api.raw(routes.register_workflow(path))

    def get_workflow(self, name: str) -> Any | None:
        try:
            return self.api.raw(routes.workflow(name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def submit(self, workflow: str, mission_input: dict[str, Any], **extra: Any) -> Any:
        return self.api.raw(routes.submit(workflow, mission_input, **extra))

    def mission(self, mission_id: str) -> Any:
        return self.api.raw(routes.mission(mission_id))

    def timeline(self, mission_id: str) -> Any:
        return self.api.raw(routes.timeline(mission_id))

    def wait(self, mission_id: str, *, timeout_s: float, interrupted: Callable[[], bool] = lambda: False) -> Any:
        give_up = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            if interrupted():
                raise ApiFailure(f"interrupted while waiting for mission {mission_id}")
            mission = self.mission(mission_id)
            if mission["status"] in MISSION_TERMINAL:
                return mission
            if time.monotonic() >= give_up:
                raise ApiFailure(f"mission {mission_id} still '{mission['status']}' after {timeout_s:g}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def control(self, mission_id: str, action: str, body: dict[str, Any] | None = None) -> Any:
        return self.api.raw(routes.control(mission_id, action, body))

    def decide(self, mission_id: str, step: str, verdict: str, reason: str | None) -> Any:
        return self.api.raw(routes.decide(mission_id, step, verdict, reason))

    def dead_letters(self, *, mission_id: str | None, replayed: bool | None, limit: int) -> Any:
        return self.api.raw(routes.dead_letters_page(mission_id=mission_id or None, replayed=replayed, limit=limit))

    def replay(self, dead_letter_id: str) -> Any:
        return self.api.raw(routes.replay(dead_letter_id))

    def schedules(self) -> Any:
        return self.api.raw(routes.schedules())

    def schedule(self, name: str, *, fires: int | None = None) -> Any:
        return self.api.raw(routes.schedule(name, fires=fires))

    def create_schedule(self, body: dict[str, Any]) -> Any:
        return self.api.raw(routes.create_schedule(body))

    def schedule_action(self, name: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """``pause``, ``resume``, ``trigger`` or ``backfill`` a schedule."""
        if action in ("pause", "resume"):
            return self.api.raw(routes.schedule_state(name, action))
        return self.api.raw(routes.fire_schedule(name, body if action == "backfill" else None))

    def delete_schedule(self, name: str) -> None:
        self.api.raw(routes.delete_schedule(name))

    def triggers(self) -> Any:
        return self.api.raw(routes.triggers())

    def trigger(self, name: str) -> Any:
        return self.api.raw(routes.trigger(name))

    def create_trigger(self, body: dict[str, Any]) -> Any:
        return self.api.raw(routes.create_trigger(body))

    def delete_trigger(self, name: str) -> None:
        self.api.raw(routes.delete_trigger(name))

    def send_event(self, event: str, event_id: str, payload: dict[str, Any]) -> Any:
        return self.api.raw(routes.send_event(event, event_id, payload))

    def follow(self, mission_id: str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """The mission's timeline live (SSE), resuming with Last-Event-ID when the stream drops,
        until the mission is final."""
        return self.api.event_data(mission_id, after or None, reconnect_patience_s=None)
