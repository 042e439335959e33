"""The CLI's HTTP client for COO's REST API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from services.common.settings import Settings
from services.common.status import MISSION_TERMINAL

RATE_LIMIT_PATIENCE_S = 60.0


class ApiFailure(RuntimeError):
    """The API answered an error; the message is its error body's message."""


def resolve_api_key(settings: Settings) -> str | None:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    dev_key = settings.data_dir / "dev-api-key"
    if dev_key.exists():
        return dev_key.read_text().strip()
    return None


class CooClient:
    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> CooClient:
        return cls(settings.api_url, resolve_api_key(settings))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = error["message"]
            except Exception:
                message = response.text[:500]
            raise ApiFailure(f"{method} {path} → {response.status_code}: {message}")
        return response.json() if response.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a 429 is retried after its ``Retry-After`` (a few times, within a minute)."""
        waited = 0.0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ApiFailure(f"cannot reach the COO API at {self.http.base_url}: {exc}") from exc
            if response.status_code != 429:
                return response
            try:
                delay = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                delay = 1.0
            if waited + delay > RATE_LIMIT_PATIENCE_S:
                return response
            time.sleep(delay)
            waited += delay

    def register_workflow(self, path: Path) -> Any:
        content_type = "application/json" if path.suffix == ".json" else "application/yaml"
        return self._call("POST", "/v1/workflows", content=path.read_bytes(), headers={"Content-Type": content_type})

    def get_workflow(self, name: str) -> Any | None:
        try:
            return self._call("GET", f"/v1/workflows/{name}")
        except ApiFailure as exc:
            if "→ 404" in str(exc):
                return None
            raise

    def submit(self, workflow: str, mission_input: dict[str, Any], **extra: Any) -> Any:
        body = {
            "workflow": workflow,
            "input": mission_input,
            **{k: v for k, v in extra.items() if v is not None},
        }
        return self._call("POST", "/v1/missions", json=body)

    def mission(self, mission_id: str) -> Any:
        return self._call("GET", f"/v1/missions/{mission_id}")

    def timeline(self, mission_id: str) -> Any:
        return self._call("GET", f"/v1/missions/{mission_id}/timeline")

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
        return self._call("POST", f"/v1/missions/{mission_id}/{action}", json=body or {})

    def decide(self, mission_id: str, step: str, verdict: str, reason: str | None) -> Any:
        return self._call("POST", f"/v1/missions/{mission_id}/steps/{step}/{verdict}", json={"reason": reason})

    def dead_letters(self, *, mission_id: str | None, replayed: bool | None, limit: int) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if mission_id:
            params["mission_id"] = mission_id
        if replayed is not None:
            params["replayed"] = str(replayed).lower()
        return self._call("GET", "/v1/dlq", params=params)

    def replay(self, dead_letter_id: str) -> Any:
        return self._call("POST", f"/v1/dlq/{dead_letter_id}/replay")

    def schedules(self) -> Any:
        return self._call("GET", "/v1/schedules")

    def schedule(self, name: str, *, fires: int | None = None) -> Any:
        params = {"fires": fires} if fires is not None else {}
        return self._call("GET", f"/v1/schedules/{name}", params=params)

    def create_schedule(self, body: dict[str, Any]) -> Any:
        return self._call("POST", "/v1/schedules", json=body)

    def schedule_action(self, name: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """``pause``, ``resume``, ``trigger`` or ``backfill`` a schedule."""
        return self._call("POST", f"/v1/schedules/{name}/{action}", json=body or {})

    def delete_schedule(self, name: str) -> None:
        self._call("DELETE", f"/v1/schedules/{name}")

    def triggers(self) -> Any:
        return self._call("GET", "/v1/triggers")

    def trigger(self, name: str) -> Any:
        return self._call("GET", f"/v1/triggers/{name}")

    def create_trigger(self, body: dict[str, Any]) -> Any:
        return self._call("POST", "/v1/triggers", json=body)

    def delete_trigger(self, name: str) -> None:
        self._call("DELETE", f"/v1/triggers/{name}")

    def send_event(self, event: str, event_id: str, payload: dict[str, Any]) -> Any:
        return self._call("POST", "/v1/events", json={"event": event, "id": event_id, "payload": payload})

    def follow(self, mission_id: str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """The mission's timeline live (SSE), resuming with Last-Event-ID when the stream drops,
        until the mission is final."""
        last = after
        delay = 0.5
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with connect_sse(
                    self.http, "GET", f"/v1/missions/{mission_id}/events", headers=headers, timeout=None
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        message = source.response.text[:500]
                        with contextlib.suppress(ValueError, KeyError, TypeError):  # not COO's error body
                            message = source.response.json()["error"]["message"]
                        raise ApiFailure(
                            f"GET /v1/missions/{mission_id}/events → {source.response.status_code}: {message}"
                        )
                    for event in source.iter_sse():
                        if event.event == "end":
                            return
                        if event.id:
                            last = int(event.id)
                        yield event.json()
                        delay = 0.5
            except (httpx.TransportError, SSEError):
                time.sleep(delay)  # the API went away: reconnect and resume where we were
                delay = min(delay * 2, 10.0)
