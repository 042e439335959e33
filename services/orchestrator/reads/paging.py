"""Cursor paging: a cursor holding the last row's (created_at, id), newest first.

A cursor is ``<microseconds since the epoch>_<id as 32 hex digits>``: every string that matches
``CURSOR_PATTERN`` decodes, so the OpenAPI document can say exactly what the API takes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_

from services.orchestrator.errors import InvalidInput

CURSOR_PATTERN = r"^[0-9]{1,17}_[0-9a-f]{32}$"  # up to the year 3000 or so
CURSOR_DESCRIPTION = "The `next_cursor` of the previous page"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    return f"{(created_at - _EPOCH) // _MICROSECOND}_{ident.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidInput("query.cursor: not a cursor returned by this API", field="query.cursor")
    micros, ident = cursor.split("_")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=ident)


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
