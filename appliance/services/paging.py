"""Keyset paging for listings that grow without bound (the audit trail, API keys, datasets,
fine-tuning jobs, policy versions).

A page ends with an opaque ``next_cursor``: the sort key of its last row, tagged with the
listing it belongs to and base64url-encoded. The next page starts strictly after that key,
so a page costs the same however deep it is, and rows written meanwhile are neither skipped
nor repeated (an offset would do both). A cursor names no tenant and grants nothing: the
caller's own visibility still applies to every page.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from appliance.errors import InvalidInput

MAX_PAGE = 500
DEFAULT_PAGE = 100
_SEP = "|"
_ROW_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: this is the last page


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE}")


def encode_cursor(tag: str, *key: str) -> str:
    return base64.urlsafe_b64encode(f"{tag}:{_SEP.join(key)}".encode()).decode().rstrip("=")


def decode_cursor(tag: str, cursor: str, parse: Callable[[list[str]], K]) -> K:
    """The sort key inside ``cursor``, read by ``parse`` (which raises ValueError on a bad key).

    A cursor of another listing, mangled, or whose key ``parse`` rejects is a 422 (InvalidInput).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, value = raw.partition(":")
        key = value.split(_SEP)
        if found != tag or not all(key):
            raise ValueError(cursor)
        return parse(key)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("invalid cursor; pass back next_cursor exactly as returned") from None


def integer_key(key: list[str]) -> int:
    """Parser of a cursor whose sort key is one non-negative integer (an id, a version)."""
    (value,) = key
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


def _creation_key(key: list[str], ident_pattern: re.Pattern[str]) -> tuple[datetime, str]:
    created, row_id = key
    when = datetime.fromisoformat(created)
    if when.tzinfo is None or not ident_pattern.match(row_id):
        raise ValueError(row_id)
    return when, row_id


def page_by_creation(
    session: Session,
    query: Select[R],
    created: InstrumentedAttribute[datetime],
    ident: InstrumentedAttribute[str],
    *,
    tag: str,
    cursor: str | None,
    limit: int,
    ident_pattern: re.Pattern[str] = _ROW_ID,
) -> tuple[list[R], str | None]:
    """One page of ``query``'s rows, oldest first, and the cursor of the next page.

    Rows created in the same instant are ordered by id, so none is skipped or repeated. A
    cursor whose id does not match ``ident_pattern`` (the listing's own id shape) is refused.
    """
    check_limit(limit)
    if cursor is not None:
        when, last_id = decode_cursor(tag, cursor, lambda key: _creation_key(key, ident_pattern))
        query = query.where(or_(created > when, and_(created == when, ident > last_id)))
    rows = list(session.scalars(query.order_by(created, ident).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(tag, getattr(last, created.key).isoformat(), getattr(last, ident.key))


def every(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every row of a listing, page after page (``fetch`` is given each page's cursor)."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
