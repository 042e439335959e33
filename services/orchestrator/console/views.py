"""How the console shows things: status tones and labels, amounts, durations, and the links to
Grafana (Tempo for a mission's trace, Loki for its logs)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from services.common.status import DeliveryOutcome, FireOutcome, MissionStatus, RunStatus, StepStatus

# Every status the console shows, by the tone its badge takes (colour is never the only cue: the
# badge always carries the status's words too): missions, steps and sandbox runs from the shared
# enums; approvals (approved, rejected, expired), alerts (firing, resolved), dead letters and checks.
_TONES: dict[str, str] = {
    MissionStatus.SUCCEEDED: "success",
    MissionStatus.FAILED: "danger",
    MissionStatus.RUNNING: "info",
    MissionStatus.PAUSED: "warning",
    MissionStatus.QUEUED: "neutral",
    MissionStatus.CANCELLED: "muted",
    StepStatus.DISPATCHED: "info",
    StepStatus.READY: "info",
    StepStatus.AWAITING_APPROVAL: "warning",
    StepStatus.RETRY_WAIT: "warning",
    StepStatus.PENDING: "neutral",
    StepStatus.SKIPPED: "muted",
    RunStatus.TIMEOUT: "danger",
    RunStatus.ERROR: "danger",
    "resolved": "success",
    "approved": "success",
    "firing": "danger",
    "rejected": "danger",
    "expired": "muted",
    "replayed": "muted",
    "ok": "success",
    # schedules' fire times and triggers' deliveries
    FireOutcome.STARTED: "success",
    FireOutcome.SKIPPED: "muted",
    FireOutcome.BUFFERED: "warning",
    FireOutcome.MISSED: "warning",
    DeliveryOutcome.DUPLICATE: "muted",
    DeliveryOutcome.IGNORED: "muted",
    DeliveryOutcome.BAD_SIGNATURE: "danger",
    "active": "success",
}
_LABELS: dict[str, str] = {
    StepStatus.AWAITING_APPROVAL: "awaiting approval",
    StepStatus.RETRY_WAIT: "waiting to retry",
}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def tone(status: str | None) -> str:
    return _TONES.get(status or "", "neutral")


def status_label(status: str | None) -> str:
    return _LABELS.get(status or "", (status or "unknown").replace("_", " "))


def usd(value: Decimal | float | None) -> str:
    """Dollars with cents, or with four decimals below a dollar (model calls cost fractions of a cent)."""
    if value is None:
        return "unknown"
    amount = Decimal(value)
    if amount == 0:
        return "$0.00"
    if abs(amount) < 1:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def duration_ms(value: int | float | None) -> str:
    if value is None:
        return "—"
    ms = float(value)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return duration_ms((end - start).total_seconds() * 1000)


def when(value: datetime | None) -> str:
    """A timestamp, UTC, to the second."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def moment(value: datetime | str | None) -> str:
    """``when`` of a timestamp kept as ISO 8601 text (a mission's trigger's fire time), or the text as it is."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return when(parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed)
    return when(value)


def every(seconds: float | None) -> str:
    """A schedule's interval: "every 90 s", with minutes, hours or days alongside when it is whole."""
    if seconds is None:
        return "—"
    text = f"every {seconds:g} s"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{text} ({seconds / size:g} {unit})"
    return text


def clock(value: datetime | None) -> str:
    """The time of day, UTC, to the millisecond (for timelines)."""
    if value is None:
        return "—"
    return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def short_id(value: object) -> str:
    return str(value)[:8]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def compact_json(value: Any, limit: int = 240) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def percent(spent: Decimal | int | None, budget: Decimal | int | None) -> int | None:
    """How much of a budget is spent, 0-100 (capped for drawing), or None without a budget."""
    if budget is None or spent is None:
        return None
    if budget <= 0:
        return 100
    return max(0, min(100, int(Decimal(spent) * 100 / Decimal(budget))))


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (None when missing, malformed or all zeros)."""
    match = _TRACEPARENT.match(traceparent or "")
    if match is None or set(match.group(1)) == {"0"}:
        return None
    return match.group(1)


def _window(start: datetime, end: datetime | None) -> dict[str, str]:
    begin = start - timedelta(minutes=5)
    finish = end + timedelta(minutes=5) if end is not None else None
    return {
        "from": str(int(begin.timestamp() * 1000)),
        "to": str(int(finish.timestamp() * 1000)) if finish is not None else "now",
    }


def _explore(grafana_url: str, datasource: dict[str, str], query: dict[str, Any], window: dict[str, str]) -> str:
    panes = {"coo": {"datasource": datasource["uid"], "queries": [query], "range": window}}
    encoded = quote(json.dumps(panes, separators=(",", ":")), safe="")
    return f"{grafana_url.rstrip('/')}/explore?schemaVersion=1&orgId=1&panes={encoded}"


def trace_link(
    grafana_url: str, tempo_uid: str, trace: str | None, start: datetime, end: datetime | None
) -> str | None:
    """Grafana Explore on Tempo, opened on the mission's trace."""
    if trace is None:
        return None
    datasource = {"type": "tempo", "uid": tempo_uid}
    query = {"refId": "A", "datasource": datasource, "queryType": "traceql", "query": trace}
    return _explore(grafana_url, datasource, query, _window(start, end))


def logs_link(grafana_url: str, loki_uid: str, mission_id: object, start: datetime, end: datetime | None) -> str:
    """Grafana Explore on Loki, every service's log lines of the mission."""
    datasource = {"type": "loki", "uid": loki_uid}
    expr = f'{{service_name=~"coo-.+"}} | mission_id="{mission_id}"'
    query = {"refId": "A", "datasource": datasource, "expr": expr, "queryType": "range"}
    return _explore(grafana_url, datasource, query, _window(start, end))


def http_url(value: object) -> bool:
    """Whether a value is an http(s) URL, safe to put in a link."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


FILTERS = {
    "tone": tone,
    "status_label": status_label,
    "usd": usd,
    "count": count,
    "duration_ms": duration_ms,
    "when": when,
    "moment": moment,
    "every": every,
    "between": between,
    "clock": clock,
    "iso": iso,
    "short_id": short_id,
    "pretty_json": pretty_json,
    "compact_json": compact_json,
}
