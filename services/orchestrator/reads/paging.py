"""Cursor paging: an opaque cursor holding the last row's (created_at, id), newest first."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, or_

from services.orchestrator.errors import InvalidInput


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(ident)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, ident = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except Exception as exc:
        raise InvalidInput("query.cursor: not a cursor returned by this API", field="query.cursor") from exc


def after_cursor(created_column: Any, id_column: Any, cursor: str) -> Any:
    """The condition selecting rows older than the cursor's, in (created_at, id) order."""
    created, ident = decode_cursor(cursor)
    return or_(created_column < created, and_(created_column == created, id_column < ident))
