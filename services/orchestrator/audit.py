"""The audit trail: every mutating call (POST/PUT/PATCH/DELETE on ``/v1`` and the console's
actions) made with a known key, allowed or refused, as one ``audit_events`` row.

``AuditTrail`` wraps the app: it opens a note for the request, the key check fills in who called
(``note_caller``) and a command may name what it created (``note_target``); the row is written when
the answer's status is known and before the answer leaves, so a client that got its answer finds
its call in ``GET /v1/audit``. Calls without a valid key (401) have no one to attribute and are
not kept.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.db.models import AuditEvent
from services.common.logging import get_logger
from services.orchestrator.auth import Caller
from services.orchestrator.reads.paging import newest_first, split_page
from services.orchestrator.state import STATE_KEY, OrchestratorState
from services.orchestrator.storable import storable_text

log = get_logger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED_PREFIXES = ("/v1/", "/console/")
_TARGET_CHARS = 300


@dataclass
class AuditNote:
    caller: Caller | None = None
    target: str | None = None


_current: ContextVar[AuditNote | None] = ContextVar("coo_audit_note", default=None)


def note_caller(caller: Caller) -> None:
    """Record who is calling, for the audit row of this request (if it is audited)."""
    note = _current.get()
    if note is not None:
        note.caller = caller


def note_target(kind: str, ident: object) -> None:
    """Record what this request acted on, when its path does not say (a new mission, a new key)."""
    note = _current.get()
    if note is not None:
        note.target = f"{kind}:{ident}"


def target_of(route: str, params: dict[str, Any]) -> str | None:
    """What a call acted on, from its route's path parameters."""
    parts: list[str] = []
    for param, kind in (("mission_id", "mission"), ("dead_letter_id", "dead_letter"), ("letter_id", "dead_letter")):
        if param in params:
            parts.append(f"{kind}:{params[param]}")
    if "key_id" in params:
        parts.append(f"key:{params['key_id']}")
    if "name" in params:
        parts.append(f"{_named_kind(route)}:{params['name']}")
    if "key" in params:
        parts.append(f"step:{params['key']}")
    return "/".join(parts) or None


_NAMED = (("agents", "agent"), ("schedules", "schedule"), ("triggers", "trigger"), ("workflows", "workflow"))


def _named_kind(route: str) -> str:
    """What a route's ``{name}`` names: ``/v1/schedules/{name}`` and ``/console/schedules/{name}/…``
    a schedule, and so on."""
    collection = route.removeprefix("/v1/").removeprefix("/console/").split("/", 1)[0]
    return next((kind for plural, kind in _NAMED if collection == plural), "workflow")


class AuditTrail:
    """ASGI middleware writing one ``audit_events`` row per mutating call with a known caller."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING or not scope["path"].startswith(AUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        note = AuditNote()
        token = _current.set(note)
        written = False

        async def send_after_audit(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True
                await _write(scope, note, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_after_audit)
        except Exception:
            if not written:
                written = True
                await _write(scope, note, 500)
            raise
        finally:
            _current.reset(token)


async def _write(scope: Scope, note: AuditNote, status: int) -> None:
    caller = note.caller
    if caller is None:
        return
    state: OrchestratorState | None = (scope.get("state") or {}).get(STATE_KEY)
    if state is None:
        return
    route_obj = scope.get("route")
    route = str(getattr(route_obj, "path", None) or scope["path"])
    target = note.target or target_of(route, dict(scope.get("path_params") or {}))
    row = {
        "key_id": caller.key_id,
        "key_name": caller.name,
        "scope": str(caller.scope),
        "method": str(scope["method"]),
        "route": storable_text(route, 300),
        "path": storable_text(str(scope["path"]), 2000),
        "target": storable_text(target, _TARGET_CHARS) if target else None,
        "outcome": status,
    }
    try:
        await state.audit.insert(row)  # committed with the audit rows of the calls answered alongside
    except Exception:
        # The answer is already decided; failing it now would hide what happened. Say so loudly.
        log.exception("audit_write_failed", key=caller.name, method=row["method"], route=row["route"], outcome=status)


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEvent] = field(default_factory=list)
    next_cursor: str | None = None


async def find_audit_events(
    state: OrchestratorState, *, limit: int, cursor: str | None, key: str | None, route: str | None
) -> AuditPage:
    """Audit events newest first, filtered by key name and route template."""
    query = newest_first(select(AuditEvent), AuditEvent, limit=limit, cursor=cursor)
    if key is not None:
        query = query.where(AuditEvent.key_name == key)
    if route is not None:
        query = query.where(AuditEvent.route == route)
    async with state.reads() as session:
        page, next_cursor = split_page(list((await session.execute(query)).scalars()), limit)
    return AuditPage(items=list(page), next_cursor=next_cursor)
