"""Cursor paging: an opaque cursor holding the last row's (created_at, id), newest first."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select, and_, or_

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


T = TypeVar("T")
Q = TypeVar("Q", bound="Select[*tuple[Any, ...]]")


def newest_first(query: Q, entity: Any, *, limit: int, cursor: str | None) -> Q:
    """``query`` over ``entity`` (a model with ``created_at`` and ``id``), newest first, one page of
    ``limit`` rows plus one (to tell whether more follow), after ``cursor`` if given."""
    query = query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(after_cursor(entity.created_at, entity.id, cursor))
    return query


def split_page(rows: Sequence[T], limit: int, last: Any = None) -> tuple[Sequence[T], str | None]:
    """The page out of ``newest_first``'s rows, and the cursor of the next one (``None``: no more).
    ``last`` gives the entity of a row when rows are tuples."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    entity: Any = page[-1] if last is None else last(page[-1])
    return page, encode_cursor(entity.created_at, entity.id)
